// The login page: sign in with the one-time code of a first-run link (URL fragment) or a token typed in.
// The fragment never reaches the server; it is read here and wiped from the address bar at once.

const form = document.getElementById("login");
const input = document.getElementById("token");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
const submit = document.getElementById("submit");

function showError(message) {
  errorLine.textContent = message || "";
  errorLine.hidden = !message;
}

async function signIn(credentials) {
  showError("");
  submit.disabled = true;
  statusLine.textContent = "Signing in…";
  try {
    const response = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(credentials),
      credentials: "same-origin",
    });
    if (response.ok) {
      statusLine.textContent = "Signed in.";
      location.replace("/");
      return;
    }
    const body = await response.json().catch(() => null);
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    statusLine.textContent = "Not signed in.";
    showError(message);
  } catch (error) {
    statusLine.textContent = "Not signed in.";
    showError(`Could not reach the gateway: ${error.message}`);
  } finally {
    submit.disabled = false;
  }
}

function codeFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const code = params.get("code");
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  return code;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = input.value.trim();
  if (!token) {
    showError("Paste a token first.");
    input.focus();
    return;
  }
  input.value = "";
  signIn({ token });
});

const fromLink = codeFromFragment();
if (fromLink) signIn({ code: fromLink });
else input.focus();
