// Answers about an app's package.json for bin/compile: node lib/package.js FILE QUESTION [ARG].
// FILE and ARG are arguments, never program text. Version ranges are judged with the semver
// module of the npm that runs the build (npm_semver: its path, from the environment).
//   valid                  exit 0 when FILE holds a JSON object, else print why and exit 1
//   script NAME            exit 0 when scripts.NAME is a non-empty string
//   dev-dependencies       exit 0 when devDependencies is non-empty
//   engine NAME            print engines.NAME when it is a string
//   package-manager        print packageManager ("pnpm@9.1.0") when set
//   satisfies VERSION      exit 0 when VERSION satisfies the range read from stdin
//   best RANGE             print the highest of the versions (JSON list on stdin) in RANGE
"use strict";
const fs = require("fs");
const [file, question, arg] = process.argv.slice(2);
const semver = () => require(process.env.npm_semver);
const stdin = () => fs.readFileSync(0, "utf8").trim();
if (question === "satisfies") {
  const range = stdin();
  process.exit(semver().satisfies(arg, range) ? 0 : 1);
}
if (question === "best") {
  let versions = JSON.parse(stdin() || "[]");
  if (!Array.isArray(versions)) versions = [versions];
  const best = semver().maxSatisfying(versions, arg);
  if (best) console.log(best);
  process.exit(best ? 0 : 1);
}
let pkg;
try {
  pkg = JSON.parse(fs.readFileSync(file, "utf8"));
} catch (error) {
  console.log(error.message);
  process.exit(1);
}
if (pkg === null || typeof pkg !== "object" || Array.isArray(pkg)) {
  console.log("it is not a JSON object");
  process.exit(1);
}
const table = (key) => (pkg[key] && typeof pkg[key] === "object" ? pkg[key] : {});
switch (question) {
  case "valid":
    process.exit(0);
  case "script": {
    const script = table("scripts")[arg];
    process.exit(typeof script === "string" && script.trim() !== "" ? 0 : 1);
  }
  case "dev-dependencies":
    process.exit(Object.keys(table("devDependencies")).length > 0 ? 0 : 1);
  case "engine": {
    const engine = table("engines")[arg];
    if (typeof engine === "string" && engine.trim()) console.log(engine.trim());
    process.exit(0);
  }
  case "package-manager":
    if (typeof pkg.packageManager === "string") console.log(pkg.packageManager.trim());
    process.exit(0);
}
process.exit(2);
