// Small DOM helpers. Everything is built with createElement and textContent: no HTML strings,
// so nothing from the API can inject markup, and nothing here conflicts with the page's CSP.

import { formatPrice, dressAlt, dressUrl } from './format.js';

/**
 * h('p', { class: 'x', hidden: true, dataset: { id: 3 } }, 'text', childNode, [more, children])
 * Attribute values of false/null/undefined are skipped; true sets an empty attribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'text') el.textContent = value;
    else if (key === 'style' || key.startsWith('on')) throw new Error(`h(): ${key} is not allowed`);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** A same-origin image path for a dress (falls back to the slug's SVG). */
export function dressImage(dress) {
  const img = typeof dress.image === 'string' ? dress.image : '';
  if (img.startsWith('/') && !img.startsWith('//')) return img;
  return `/media/dresses/${encodeURIComponent(dress.slug || 'alba')}.svg`;
}

/**
 * A catalog card: <article class="dress-card"> with the image, collection, name (the link,
 * stretched over the whole card by CSS), silhouette and fabric, and the price.
 */
export function dressCard(dress, { headingLevel = 2, lazy = true } = {}) {
  const heading = `h${Math.min(6, Math.max(2, headingLevel))}`;
  const meta = [dress.silhouette, dress.fabric].filter(Boolean).join(' · ');
  return h('article', { class: 'dress-card', dataset: { id: dress.id } },
    h('div', { class: 'dress-card__media' },
      h('img', {
        class: 'dress-card__image',
        src: dressImage(dress),
        alt: dressAlt(dress),
        width: 300,
        height: 400,
        loading: lazy ? 'lazy' : false,
        decoding: 'async',
      })),
    h('div', { class: 'dress-card__body' },
      h('p', { class: 'dress-card__collection' }, dress.collection || ''),
      h(heading, { class: 'dress-card__name' },
        h('a', { class: 'dress-card__link', href: dressUrl(dress) }, dress.name || 'Gown')),
      h('p', { class: 'dress-card__meta' },
        h('span', { class: 'visually-hidden' }, 'Silhouette and fabric: '), meta),
      h('p', { class: 'dress-card__price' },
        h('span', { class: 'visually-hidden' }, 'Price: '), formatPrice(dress.price_eur))));
}

/** Placeholder cards shown while the first page loads (not .dress-card on purpose). */
export function skeletonCards(count) {
  const cards = [];
  for (let i = 0; i < count; i += 1) {
    cards.push(h('div', { class: 'skeleton-card', 'aria-hidden': 'true' },
      h('div', { class: 'skeleton-card__media' }),
      h('div', { class: 'skeleton-card__line skeleton-card__line--short' }),
      h('div', { class: 'skeleton-card__line' }),
      h('div', { class: 'skeleton-card__line skeleton-card__line--price' })));
  }
  return cards;
}

/**
 * A message block: kind is "empty", "error", "not-found" or "loading".
 * actions: [{ label, href } | { label, onClick }]
 */
export function stateBlock({ kind = 'empty', title, text, actions = [], headingLevel = 2 }) {
  const buttons = actions.map((a, i) => {
    const cls = i === 0 ? 'btn btn--primary' : 'btn btn--ghost';
    if (a.href) return h('a', { class: cls, href: a.href }, a.label);
    const b = h('button', { class: cls, type: 'button' }, a.label);
    b.addEventListener('click', a.onClick);
    return b;
  });
  return h('div', { class: `state state--${kind}` },
    h(`h${headingLevel}`, { class: 'state__title' }, title),
    text ? h('p', { class: 'state__text' }, text) : null,
    buttons.length ? h('div', { class: 'button-row button-row--center' }, buttons) : null);
}

/** Replaces every child of `el` with `nodes`. */
export function replaceChildren(el, ...nodes) {
  el.replaceChildren(...nodes.flat().filter(Boolean));
}
