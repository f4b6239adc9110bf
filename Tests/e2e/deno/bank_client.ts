// One bank client: random transfers between accounts with versionstamp
// checks, for `seconds`. Each successful transfer also writes a log entry in
// the same commit. Prints {"ok": n, "conflicts": m}.
const [url, client, accountsText, secondsText] = Deno.args;
const accounts = Number(accountsText);
const kv = await Deno.openKv(url);
const end = Date.now() + Number(secondsText) * 1000;
let ok = 0, conflicts = 0;
while (Date.now() < end) {
  const from = Math.floor(Math.random() * accounts);
  let to = Math.floor(Math.random() * accounts);
  if (to === from) to = (to + 1) % accounts;
  const [a, b] = await kv.getMany<number[]>([["bank", from], ["bank", to]]);
  const amount = Math.floor(Math.random() * 10) + 1;
  if ((a.value ?? 0) < amount) continue;
  const r = await kv.atomic().check(a).check(b)
    .set(["bank", from], a.value! - amount)
    .set(["bank", to], b.value! + amount)
    .set(["banklog", client, ok], { from, to, amount })
    .commit();
  if (r.ok) ok++; else conflicts++;
}
console.log(JSON.stringify({ ok, conflicts }));
kv.close();
