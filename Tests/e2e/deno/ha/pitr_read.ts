// Prints every ["p", i] entry: [i, versionstamp].
const kv = await Deno.openKv(Deno.args[0]);
const out: [number, string][] = [];
for await (const e of kv.list({ prefix: ["p"] })) out.push([e.key[1] as number, e.versionstamp]);
console.log(JSON.stringify(out));
kv.close();
