// Watches the given string keys and prints every frame as one JSON line
// ([value or null per key]); exits after `maxFrames` frames.
const [url, maxFramesText, ...names] = Deno.args;
const kv = await Deno.openKv(url);
let n = 0;
for await (const entries of kv.watch(names.map((k) => ["w", k]))) {
  console.log(JSON.stringify(entries.map((e) => e.value ?? null)));
  if (++n >= Number(maxFramesText)) break;
}
kv.close();
