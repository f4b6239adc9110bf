// One of several concurrent processes: N check-and-set increments of one
// counter, retrying on conflict. Prints the number of conflicts seen.
const [url, key, countText] = Deno.args;
const kv = await Deno.openKv(url);
let conflicts = 0;
for (let i = 0; i < Number(countText); i++) {
  for (;;) {
    const cur = await kv.get<number>(["cas", key]);
    const r = await kv.atomic().check(cur).set(["cas", key], (cur.value ?? 0) + 1).commit();
    if (r.ok) break;
    conflicts++;
  }
}
kv.close();
console.log(JSON.stringify({ conflicts }));
