// Writes ["p", i] = i for i in 1..N, one commit each, printing the versionstamps.
const [url, n] = Deno.args;
const kv = await Deno.openKv(url);
const out: string[] = [];
for (let i = 1; i <= Number(n); i++) {
  const r = await kv.set(["p", i], i);
  out.push(r.versionstamp);
  await new Promise((r) => setTimeout(r, 20));
}
console.log(JSON.stringify(out));
kv.close();
