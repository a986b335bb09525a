# One image for every jobmesh process; compose.yaml picks the command.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY core core
COPY db db
COPY gen gen
COPY scheduler_svc scheduler_svc
COPY worker_svc worker_svc
COPY monitor_svc monitor_svc
COPY api_gateway api_gateway
COPY launcher launcher
RUN pip install . && useradd --system --no-create-home jobmesh
USER jobmesh
EXPOSE 50051 50052 5136 5137
CMD ["jobmesh-scheduler"]
