// Prints every ["w", …] entry with its versionstamp, and the counter.
const kv = await Deno.openKv(Deno.args[0]);
const entries: [string, number, string][] = [];
for await (const e of kv.list({ prefix: ["w"] })) {
  entries.push([e.key[1] as string, e.key[2] as number, e.versionstamp]);
}
const c = await kv.get<Deno.KvU64>(["counter"]);
console.log(JSON.stringify({ entries, counter: c.value ? String(c.value.value) : "0" }));
kv.close();
