// Builds dist/ from src/index.js (one ES module, no dependencies): the ES module as is, a
// CommonJS copy (what a mini program's "build npm" step and `require` take), and the types.
import { mkdirSync, readFileSync, writeFileSync, copyFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const source = readFileSync(join(root, "src/index.js"), "utf8");
const exportLine = /^export \{ ([^}]+) \};\s*$/m;
const match = source.match(exportLine);
if (!match) throw new Error("src/index.js must end with one `export { … };` line");
if (/^export (const|function|class|default)/m.test(source)) {
  throw new Error("src/index.js exports only through its last `export { … };` line");
}
const names = match[1].split(",").map((n) => n.trim());
const commonjs =
  source.replace(exportLine, "") +
  names.map((n) => `exports.${n} = ${n};`).join("\n") +
  "\n";
mkdirSync(join(root, "dist"), { recursive: true });
writeFileSync(join(root, "dist/index.mjs"), source);
writeFileSync(join(root, "dist/index.js"), `"use strict";\n${commonjs}`);
copyFileSync(join(root, "src/index.d.ts"), join(root, "dist/index.d.ts"));
