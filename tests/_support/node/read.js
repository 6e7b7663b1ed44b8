// Read cache keys as a Node app would (JSON.parse) and print what each value became, with its
// JavaScript type, so the Python test can compare: argv is the Redis URL, then the keys.
"use strict";
const { createClient } = require("redis");

function describe(value) {
  if (value === null) return ["null"];
  if (Array.isArray(value)) return ["array", value.map(describe)];
  switch (typeof value) {
    case "number":
      return ["number", String(value)];
    case "string":
      return ["string", value];
    case "boolean":
      return ["bool", String(value)];
    default:
      return [
        "object",
        Object.fromEntries(Object.entries(value).map(([key, item]) => [key, describe(item)])),
      ];
  }
}

(async () => {
  const [url, ...keys] = process.argv.slice(2);
  const client = createClient({ url });
  await client.connect();
  const seen = {};
  for (const key of keys) seen[key] = describe(JSON.parse(await client.get(key)));
  await client.quit();
  process.stdout.write(JSON.stringify(seen));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
