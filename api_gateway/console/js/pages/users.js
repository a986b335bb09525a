// Accounts (admins only): roles, and disabling or enabling an account.
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { api } from "../api.js";
import { ConfirmButton, ErrorBox, Loading, Notice, PageTitle, Time, usePoll } from "../components.js";
import { label } from "../format.js";
import { withQuery } from "../router.js";

const ROLES = ["ROLE_ADMIN", "ROLE_USER", "ROLE_VIEWER"];
const ROLE_HINT = {
  ROLE_ADMIN: "everything, and manages accounts",
  ROLE_USER: "creates and manages its own jobs",
  ROLE_VIEWER: "reads every job and run, changes nothing",
};

function UserRow({ user, me, onChange, setError, setNotice }) {
  const self = me && me.id === user.id;
  const update = async (path, body, message) => {
    setError(null);
    try {
      onChange(await api.put(`/api/users/${user.id}/${path}`, body));
      setNotice(message);
    } catch (err) {
      setError(err);
    }
  };
  return html`<tr class=${user.disabled ? "disabled" : ""}>
    <td data-label="Username">${user.username}${self ? html` <span class="muted small">(you)</span>` : ""}</td>
    <td data-label="Email">${user.email}</td>
    <td data-label="Role">
      <label class="visually-hidden" for=${`role-${user.id}`}>Role of ${user.username}</label>
      <select id=${`role-${user.id}`} value=${user.role} disabled=${self}
        onChange=${(e) => update("role", { role: e.currentTarget.value }, `${user.username} is now ${label(e.currentTarget.value)}.`)}>
        ${ROLES.map((r) => html`<option value=${r} title=${ROLE_HINT[r]}>${label(r)}</option>`)}
      </select>
    </td>
    <td data-label="Account">${user.disabled ? html`<span class="badge st-cancelled">Disabled</span>` : html`<span class="badge st-succeeded">Enabled</span>`}</td>
    <td data-label="Created"><${Time} value=${user.createTime} /></td>
    <td data-label="Actions">
      ${self
        ? html`<span class="muted small">—</span>`
        : user.disabled
          ? html`<button type="button" onClick=${() => update("disabled", { disabled: false }, `${user.username} is enabled again.`)}>Enable</button>`
          : html`<${ConfirmButton} label="Disable" danger title=${`Disable ${user.username}?`}
              message="The account can no longer sign in, and its sessions end at once. Its jobs keep running."
              onConfirm=${() => update("disabled", { disabled: true }, `${user.username} is disabled.`)} />`}
    </td>
  </tr>`;
}

export function Users({ query, role, me }) {
  const token = query.get("pageToken") || "";
  const [page, setPage] = useState(null);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState("");
  usePoll(
    async (signal) => {
      if (role !== "ROLE_ADMIN") return;
      try {
        setPage(await api.get(withQuery("/api/users", { pageSize: 50, pageToken: token }), { signal }));
      } catch (err) {
        if (err.name !== "AbortError") setError(err);
      }
    },
    0,
    [token, role],
  );
  if (role !== "ROLE_ADMIN") {
    return html`<${PageTitle}>Users<//><p>Only admins manage accounts.</p>`;
  }
  const replace = (user) => setPage((p) => ({ ...p, users: p.users.map((u) => (u.id === user.id ? user : u)) }));
  return html`<${PageTitle}>Users<//>
    <p class="muted">${ROLES.map((r) => html`<span><strong>${label(r)}</strong>: ${ROLE_HINT[r]}. </span>`)}
      A role change takes effect with the account's next request.</p>
    <${Notice} message=${notice} />
    <${ErrorBox} error=${error} />
    ${!page
      ? html`<${Loading} />`
      : html`<div class="table-wrap"><table class="responsive users">
          <thead><tr>
            <th scope="col">Username</th><th scope="col">Email</th><th scope="col">Role</th>
            <th scope="col">Account</th><th scope="col">Created</th><th scope="col">Actions</th>
          </tr></thead>
          <tbody>${page.users.map(
            (user) => html`<${UserRow} key=${user.id} user=${user} me=${me} onChange=${replace} setError=${setError} setNotice=${setNotice} />`,
          )}</tbody>
        </table></div>
        <nav class="pager" aria-label="Pages">
          ${token ? html`<a href="/admin/users">First page</a>` : ""}
          ${page.nextPageToken ? html`<a href=${withQuery("/admin/users", { pageToken: page.nextPageToken })} rel="next">Next</a>` : ""}
        </nav>`}`;
}
