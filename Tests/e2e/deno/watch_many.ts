// Opens `streams` watch streams on one connection (stream i watches keys
// k(i%keys), k((i+1)%keys), k((i+2)%keys)) and waits until every stream has
// seen `final` for all its keys. Prints {"done": streams} or exits 1 on timeout.
const [url, streamsText, keysText, finalText, timeoutText] = Deno.args;
const streams = Number(streamsText), nkeys = Number(keysText), final = Number(finalText);
const kv = await Deno.openKv(url);
let done = 0;
const timer = setTimeout(() => {
  console.log(JSON.stringify({ done, streams, timeout: true }));
  Deno.exit(1);
}, Number(timeoutText ?? 60000));
await Promise.all(Array.from({ length: streams }, async (_, i) => {
  const keys = [0, 1, 2].map((d) => ["many", `k${(i + d) % nkeys}`]);
  const reader = kv.watch(keys).getReader();
  for (;;) {
    const { value } = await reader.read();
    if (value!.every((e) => e.value === final)) break;
  }
  await reader.cancel();
  done++;
}));
clearTimeout(timer);
console.log(JSON.stringify({ done }));
kv.close();
