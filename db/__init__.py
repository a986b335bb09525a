"""Storage: models, engine, repositories (the only code that issues SQL), migrations."""
