// Money stays a decimal string as the API sends it, summed and compared exactly
// as scaled BigInts, never as floats. Shown to a person it is rounded: to cents
// from $1 up, to two significant digits below (never fewer than two decimals);
// `moneyText` keeps the exact amount in its tooltip and data-amount.
import { h } from "./ui.js";

const SCALE = 10;
const DECIMAL = /^[0-9]{1,10}(\.[0-9]{1,10})?$/;
const SIGNIFICANT = 2;

export const isAmount = (text) => DECIMAL.test(text);

const grouped = (whole) => whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");

// "-0.5" → {negative: true, whole: "0", fraction: "5"}
function parts(amount) {
  const text = String(amount);
  const negative = text.startsWith("-");
  const [whole, fraction = ""] = text.replace(/^[-+]/, "").split(".");
  return { negative, whole: whole.replace(/^0+(?=\d)/, ""), fraction };
}

// The sign a person reads: − for money out, + (when asked for) for money in, none for zero.
function signOf(negative, zero, sign) {
  if (zero) return "";
  return negative ? "−" : sign ? "+" : "";
}

// The exact amount, trailing zeros dropped down to cents: "$0.00000024", "$1,234.50".
export function exactMoney(amount, { sign = false } = {}) {
  if (amount === null || amount === undefined) return "—";
  const { negative, whole, fraction } = parts(amount);
  const trimmed = fraction.replace(/0+$/, "").padEnd(2, "0");
  const zero = /^0*$/.test(whole + fraction);
  return `${signOf(negative, zero, sign)}$${grouped(whole)}.${trimmed}`;
}

// The amount rounded (half up) for reading: "$10.00" for 9.99999896, "$0.000011" for 0.0000106704.
export function formatMoney(amount, { sign = false } = {}) {
  if (amount === null || amount === undefined) return "—";
  const { negative, whole, fraction } = parts(amount);
  let decimals = 2;
  if (/^0*$/.test(whole)) {
    const leading = fraction.match(/^0*/)[0].length;
    if (leading < fraction.length) decimals = Math.max(2, leading + SIGNIFICANT);
  }
  const length = Math.max(fraction.length, decimals);
  let value = BigInt(whole + fraction.padEnd(length, "0"));
  if (length > decimals) {
    const divisor = 10n ** BigInt(length - decimals);
    value = (value + divisor / 2n) / divisor;
  }
  const digits = value.toString().padStart(decimals + 1, "0");
  const shown = digits.slice(-decimals).replace(/0+$/, "").padEnd(2, "0");  // 0.000000090 reads 0.00000009
  return `${signOf(negative, value === 0n, sign)}$${grouped(digits.slice(0, -decimals))}.${shown}`;
}

// The rounded amount as an element whose tooltip and data-amount hold the exact one.
export function moneyText(amount, { sign = false, tag = "span", ...attributes } = {}) {
  return h(tag, { class: "money", title: exactMoney(amount, { sign }), "data-amount": amount, ...attributes },
           formatMoney(amount, { sign }));
}

function scaled(amount) {
  const { negative, whole, fraction } = parts(amount);
  const value = BigInt(whole + fraction.padEnd(SCALE, "0").slice(0, SCALE));
  return negative ? -value : value;
}

function unscaled(value) {
  const digits = (value < 0n ? -value : value).toString().padStart(SCALE + 1, "0");
  return `${value < 0n ? "-" : ""}${digits.slice(0, -SCALE)}.${digits.slice(-SCALE)}`;
}

export const sumMoney = (amounts) => unscaled(amounts.reduce((total, amount) => total + scaled(amount), 0n));
export const compareMoney = (a, b) => { const d = scaled(a) - scaled(b); return d > 0n ? 1 : d < 0n ? -1 : 0; };

// A drawing proportion only (chart bar heights); never shown as an amount.
export const ratio = (part, whole) => (scaled(whole) === 0n ? 0 : Number((scaled(part) * 1000000n) / scaled(whole)) / 1000000);
