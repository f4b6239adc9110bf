// Watches ["counter"] and prints every value it sees: {v, t}.
const kv = await Deno.openKv(Deno.args[0]);
for await (const [e] of kv.watch([["counter"]])) {
  const v = e.value as Deno.KvU64 | null;
  console.log(JSON.stringify({ v: v ? String(v.value) : "0", t: Date.now() }));
}
