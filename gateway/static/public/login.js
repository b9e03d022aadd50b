// The login page: sign in with a token from the URL fragment (the first-run link) or typed in.
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

async function signIn(token) {
  showError("");
  submit.disabled = true;
  statusLine.textContent = "Signing in…";
  try {
    const response = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
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

function tokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  return token;
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
  signIn(token);
});

const fromLink = tokenFromFragment();
if (fromLink) signIn(fromLink);
else input.focus();
