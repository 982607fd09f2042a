// Money stays a decimal string as the API sends it. Shown trimmed ("12.5000" →
// "$12.50"); summed and compared exactly as scaled BigInts, never as floats.
const SCALE = 10;
const DECIMAL = /^[0-9]{1,10}(\.[0-9]{1,10})?$/;

export const isAmount = (text) => DECIMAL.test(text);

export function formatMoney(amount) {
  if (amount === null || amount === undefined) return "—";
  const [whole, fraction = ""] = String(amount).split(".");
  const trimmed = fraction.replace(/0+$/, "").padEnd(2, "0");
  return `$${whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",")}.${trimmed}`;
}

function scaled(amount) {
  const [whole, fraction = ""] = String(amount).split(".");
  return BigInt(whole + fraction.padEnd(SCALE, "0").slice(0, SCALE));
}

function unscaled(value) {
  const digits = value.toString().padStart(SCALE + 1, "0");
  return `${digits.slice(0, -SCALE)}.${digits.slice(-SCALE)}`;
}

export const sumMoney = (amounts) => unscaled(amounts.reduce((total, amount) => total + scaled(amount), 0n));
export const compareMoney = (a, b) => { const d = scaled(a) - scaled(b); return d > 0n ? 1 : d < 0n ? -1 : 0; };

// A drawing proportion only (chart bar heights); never shown as an amount.
export const ratio = (part, whole) => (scaled(whole) === 0n ? 0 : Number((scaled(part) * 1000000n) / scaled(whole)) / 1000000);
