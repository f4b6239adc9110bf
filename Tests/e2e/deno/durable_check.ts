// Reads everything under ["dur"]; prints {writer: {i: [a-versionstamp, b-versionstamp]}} plus a fresh commit's versionstamp.
const [url] = Deno.args;
const kv = await Deno.openKv(url);
const out: Record<string, Record<string, (string | null)[]>> = {};
for await (const e of kv.list({ prefix: ["dur"] })) {
  const [, w, i, part] = e.key as [string, string, number, string];
  (out[w] ??= {})[String(i)] ??= [null, null];
  out[w][String(i)][part === "a" ? 0 : 1] = e.versionstamp;
}
const next = (await kv.set(["dur-probe"], 1)).versionstamp;
console.log(JSON.stringify({ entries: out, next }));
kv.close();
