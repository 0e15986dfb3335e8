// The todo web client: the Cloudlet SDK (served by the server itself at /sdk/cloudlet.js),
// password login, and the user's todos.
import { createClient } from "/sdk/cloudlet.js";

// The site is served at /sites/{app}/: the app is in the path, the server is this origin.
const app = location.pathname.split("/")[2];
const cloud = createClient({ server: location.origin, app });
const todos = cloud.db.collection("todos");
const $ = (id) => document.getElementById(id);

function fail(error) {
  $("error").textContent = error.code ? `${error.message} (${error.code})` : String(error);
}

async function show() {
  $("error").textContent = "";
  const session = cloud.auth.session();
  $("login").hidden = Boolean(session);
  $("todos").hidden = !session;
  if (!session) return;
  $("user").textContent = session.user.email ?? session.user.id;
  const page = await todos.orderBy("created_at").limit(200).get();
  $("list").replaceChildren(...page.items.map(row));
  const stats = await cloud.functions.call("stats");
  $("stats").textContent = `${stats.open} open, ${stats.done} done`;
}

function row(todo) {
  const item = document.createElement("li");
  item.className = todo.done ? "done" : "";
  item.dataset.id = todo.id;
  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = todo.done;
  box.setAttribute("aria-label", `done: ${todo.title}`);
  box.onchange = () =>
    todos
      .update(todo.id, { done: box.checked, done_at: box.checked ? new Date().toISOString() : null })
      .then(show, fail);
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = todo.title;
  const remove = document.createElement("button");
  remove.textContent = "Delete";
  remove.onclick = () => todos.remove(todo.id).then(show, fail);
  item.append(box, title, remove);
  return item;
}

$("login").onsubmit = (event) => {
  event.preventDefault();
  cloud.auth.loginWithPassword($("email").value, $("password").value).then(show, fail);
};
$("sign-up").onclick = () => cloud.auth.signUp($("email").value, $("password").value).then(show, fail);
$("logout").onclick = () => cloud.auth.logout().then(show, fail);
$("add").onsubmit = (event) => {
  event.preventDefault();
  const title = $("title").value.trim();
  if (!title) return;
  todos.add({ title }).then(() => {
    $("title").value = "";
    return show();
  }, fail);
};

show().catch(fail);
