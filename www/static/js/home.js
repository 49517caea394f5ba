// Home page: replaces the static "featured" paragraph with three gowns from the API,
// one per collection where possible. Without the API the static text simply stays.

import './site.js';
import { listDresses } from './api.js';
import { dressCard, replaceChildren } from './ui.js';

function pickFeatured(items, count) {
  const chosen = [];
  const seen = new Set();
  for (const d of items) {
    if (chosen.length === count) break;
    if (!seen.has(d.collection)) {
      seen.add(d.collection);
      chosen.push(d);
    }
  }
  for (const d of items) {
    if (chosen.length === count) break;
    if (!chosen.includes(d)) chosen.push(d);
  }
  return chosen;
}

async function loadFeatured() {
  const grid = document.getElementById('featured-grid');
  if (!grid) return;
  try {
    const data = await listDresses({ page: 1, perPage: 32 });
    const items = Array.isArray(data && data.items) ? data.items : [];
    if (!items.length) return;
    const cards = pickFeatured(items, 3).map((d) => dressCard(d, { headingLevel: 3 }));
    replaceChildren(grid, cards);
  } catch {
    // keep the static fallback text
  }
}

loadFeatured();
