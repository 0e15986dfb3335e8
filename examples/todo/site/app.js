// The todo web client: the Cloudlet SDK (served by the server itself at /sdk/cloudlet.js),
// password login, and the user's todos, each with a photo if they like, kept live: a change
// made anywhere else (another tab, the mini program, a function) shows at once.
import { createClient } from "/sdk/cloudlet.js";

// The site is served at /sites/{app}/: the app is in the path, the server is this origin.
const app = location.pathname.split("/")[2];
const cloud = createClient({ server: location.origin, app });
const todos = cloud.db.collection("todos");
const $ = (id) => document.getElementById(id);

function fail(error) {
  $("error").textContent = error.code ? `${error.message} (${error.code})` : String(error);
}

let watching = null;
let soon = null;

/** Watches the user's todos: any change shows the list again (a few at once, once). */
function live(on) {
  if (!on) {
    watching?.close();
    watching = null;
    return;
  }
  if (watching) return;
  const again = () => {
    clearTimeout(soon);
    soon = setTimeout(() => show().catch(fail), 50);
  };
  watching = todos.watch(again, { onReset: again, onError: fail });
}

async function show() {
  $("error").textContent = "";
  const session = cloud.auth.session();
  $("login").hidden = Boolean(session);
  $("todos").hidden = !session;
  live(Boolean(session));
  if (!session) return;
  $("user").textContent = session.user.email ?? session.user.id;
  // The photos' thumbnails come signed with the page: one request for the list and its images.
  const page = await todos.orderBy("created_at").limit(200).fileUrls("120x120").get();
  $("list").replaceChildren(...page.items.map((todo) => row(todo, page.file_urls[todo.photo])));
  const stats = await cloud.functions.call("stats");
  $("stats").textContent = `${stats.open} open, ${stats.done} done`;
}

function row(todo, photo) {
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
  item.append(box, title, attach(todo), remove);
  if (photo) {
    const image = document.createElement("img");
    image.className = "photo";
    image.src = photo.url;
    image.alt = `photo: ${todo.title}`;
    item.prepend(image);
  }
  return item;
}

/** A button that picks an image, uploads it and puts it on the todo. */
function attach(todo) {
  const label = document.createElement("label");
  label.className = "attach";
  label.textContent = todo.photo ? "Change photo" : "Add photo";
  const input = document.createElement("input");
  input.type = "file";
  input.accept = "image/*";
  input.onchange = async () => {
    const [picked] = input.files;
    if (!picked) return;
    try {
      const file = await cloud.files.upload("photos", picked, { name: picked.name });
      await todos.update(todo.id, { photo: file.id });
      await show();
    } catch (error) {
      fail(error);
    }
  };
  label.append(input);
  return label;
}

$("login").onsubmit = (event) => {
  event.preventDefault();
  cloud.auth.loginWithPassword($("email").value, $("password").value).then(show, fail);
};
$("sign-up").onclick = () => cloud.auth.signUp($("email").value, $("password").value).then(show, fail);
$("logout").onclick = () => {
  // The watch first: the logout closes its socket.
  live(false);
  cloud.auth.logout().then(show, fail);
};
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
