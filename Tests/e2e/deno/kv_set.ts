// Sets ["w", key] = value (JSON) for each key=value argument; "key=" deletes.
const [url, ...pairs] = Deno.args;
const kv = await Deno.openKv(url);
for (const p of pairs) {
  const [k, v] = p.split("=");
  if (v === "") await kv.delete(["w", k]);
  else await kv.set(["w", k], JSON.parse(v));
}
kv.close();
