// Sign in and sign up.
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { ApiError, publicPost, startSession } from "../api.js";
import { ErrorBox, Field, PageTitle } from "../components.js";
import { withQuery } from "../router.js";

function violationsByField(error) {
  const out = {};
  if (error instanceof ApiError) {
    for (const v of error.violations) out[v.field.replace(/^.*\./, "")] = v.description;
  }
  return out;
}

function AuthForm({ title, fields, submitLabel, action, footer, notice }) {
  const [values, setValues] = useState({});
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const errors = violationsByField(error);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      startSession(await action(values));
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return html`<section class="card auth">
    <${PageTitle}>${title}<//>
    ${notice ? html`<p class="alert info" role="status">${notice}</p>` : ""}
    <${ErrorBox} error=${error && !Object.keys(errors).length ? error : null} />
    <form onSubmit=${submit} novalidate>
      ${fields.map(
        (f) => html`<${Field} id=${`auth-${f.name}`} label=${f.label} error=${errors[f.name]} hint=${f.hint}>
          ${(attrs) => html`<input ...${attrs} name=${f.name} type=${f.type || "text"} autocomplete=${f.autocomplete}
            required value=${values[f.name] || ""}
            onInput=${(e) => setValues({ ...values, [f.name]: e.currentTarget.value })} />`}
        <//>`,
      )}
      <button class="primary" type="submit" disabled=${busy}>${submitLabel}</button>
    </form>
    ${footer}
  </section>`;
}

export function SignIn({ query, notice }) {
  const next = query.get("next") || "";
  return html`<${AuthForm}
    title="Sign in to jobmesh"
    notice=${notice}
    submitLabel="Sign in"
    fields=${[
      { name: "email", label: "Email", type: "email", autocomplete: "username" },
      { name: "password", label: "Password", type: "password", autocomplete: "current-password" },
    ]}
    action=${(v) => publicPost("/api/auth/login", { email: v.email || "", password: v.password || "" })}
    footer=${html`<p>No account yet? <a href=${withQuery("/signup", { next })}>Sign up</a>.</p>`}
  />`;
}

export function SignUp({ query }) {
  const next = query.get("next") || "";
  return html`<${AuthForm}
    title="Create an account"
    submitLabel="Sign up"
    fields=${[
      { name: "username", label: "Username", autocomplete: "username", hint: "3-64 letters, digits, _ . or -" },
      { name: "email", label: "Email", type: "email", autocomplete: "email" },
      { name: "password", label: "Password", type: "password", autocomplete: "new-password", hint: "8-128 characters" },
    ]}
    action=${(v) =>
      publicPost("/api/auth/signup", { username: v.username || "", email: v.email || "", password: v.password || "" })}
    footer=${html`<p>Have an account? <a href=${withQuery("/signin", { next })}>Sign in</a>.</p>`}
  />`;
}
