// Formatting helpers: prices in euros, dates for people, dress descriptions for alt text.

const price = new Intl.NumberFormat('en-IE', {
  style: 'currency',
  currency: 'EUR',
  minimumFractionDigits: 0,
  maximumFractionDigits: 0,
});

/** 1890 -> "€1,890" */
export function formatPrice(eur) {
  const n = Number(eur);
  return Number.isFinite(n) ? price.format(n) : '';
}

const longDate = new Intl.DateTimeFormat('en-GB', {
  weekday: 'long',
  day: 'numeric',
  month: 'long',
  year: 'numeric',
  timeZone: 'UTC',
});

/** "2030-06-04" -> "Tuesday 4 June 2030"; anything unparsable comes back as it was. */
export function formatLongDate(iso) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(iso || ''));
  if (!m) return String(iso || '');
  return longDate.format(new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))));
}

/** "Ivory" + "A-line" + "Silk mikado" -> "ivory A-line gown in silk mikado" */
export function describeDress(dress) {
  const colour = String(dress.colour || '').toLowerCase();
  const silhouette = String(dress.silhouette || '');
  const fabric = String(dress.fabric || '').toLowerCase();
  const shape = silhouette === 'A-line' ? silhouette : silhouette.toLowerCase();
  let text = [colour, shape, 'gown'].filter(Boolean).join(' ');
  if (fabric) text += ` in ${fabric}`;
  if (dress.neckline) text += ` with a ${String(dress.neckline).toLowerCase()} neckline`;
  return text;
}

/** Alt text for a dress illustration. */
export function dressAlt(dress) {
  return `${dress.name || 'Gown'}: ${describeDress(dress)}.`;
}

export function dressUrl(dress) {
  return `/dress.html?id=${encodeURIComponent(dress.id)}`;
}

export function collectionUrl(collection) {
  return `/catalog.html?collection=${encodeURIComponent(collection)}`;
}

export function bookUrl(dress) {
  return `/book.html?dress=${encodeURIComponent(dress.id)}`;
}
