// Writes pairs of keys atomically, forever; prints the id and versionstamp of
// every acknowledged commit as one JSON line. Killed by the test.
const [url, writer] = Deno.args;
const kv = await Deno.openKv(url);
for (let i = 0; ; i++) {
  const r = await kv.atomic()
    .set(["dur", writer, i, "a"], i)
    .set(["dur", writer, i, "b"], i)
    .commit();
  console.log(JSON.stringify({ i, vs: r.versionstamp }));
}
