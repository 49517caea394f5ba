// Dress page: /dress.html?id=N shows one gown from /api/dresses/{id}, a 404 state when it
// does not exist, and a few more gowns from the same collection.

import './site.js';
import { ApiError, describeError, getDress, listDresses } from './api.js';
import { bookUrl, collectionUrl, dressAlt, formatPrice } from './format.js';
import { dressCard, dressImage, h, replaceChildren, stateBlock } from './ui.js';

const view = document.getElementById('dress-view');
const crumbCollection = document.getElementById('crumb-collection');
const crumbDress = document.getElementById('crumb-dress');
const related = document.getElementById('related');
const relatedTitle = document.getElementById('related-title');
const relatedGrid = document.getElementById('related-grid');

function setCrumbs(dress) {
  if (dress && dress.collection) {
    replaceChildren(crumbCollection, h('a', { href: collectionUrl(dress.collection) }, dress.collection));
    crumbCollection.hidden = false;
  } else {
    crumbCollection.hidden = true;
  }
  replaceChildren(crumbDress, h('span', { 'aria-current': 'page' }, dress ? dress.name : 'Gown not found'));
}

function spec(term, value) {
  if (value === undefined || value === null || value === '') return null;
  return h('div', { class: 'spec-list__row' }, h('dt', {}, term), h('dd', {}, value));
}

function renderDress(dress) {
  document.title = `${dress.name} · ${dress.collection} collection · Orta Novias`;
  setCrumbs(dress);

  const article = h('article', { class: 'dress-detail', 'aria-labelledby': 'dress-name' },
    h('figure', { class: 'dress-detail__media' },
      h('img', {
        class: 'dress-detail__image',
        src: dressImage(dress),
        alt: dressAlt(dress),
        width: 300,
        height: 400,
      }),
      h('figcaption', { class: 'dress-detail__caption' }, `Illustration of ${dress.name}. Come and see the real gown in the salon.`)),
    h('div', { class: 'dress-detail__info' },
      h('p', { class: 'eyebrow' },
        h('a', { href: collectionUrl(dress.collection) }, `${dress.collection} collection`)),
      h('h1', { id: 'dress-name', class: 'dress-detail__name' }, dress.name),
      h('p', { class: 'dress-detail__designer' }, `Designed by ${dress.designer}`),
      h('p', { class: 'dress-detail__price' },
        h('span', { class: 'visually-hidden' }, 'Price: '), formatPrice(dress.price_eur)),
      h('p', { class: 'dress-detail__description' }, dress.description || ''),
      h('dl', { class: 'spec-list' },
        spec('Silhouette', dress.silhouette),
        spec('Neckline', dress.neckline),
        spec('Fabric', dress.fabric),
        spec('Colour', dress.colour),
        spec('Designer', dress.designer),
        spec('Collection', dress.collection)),
      h('div', { class: 'button-row' },
        h('a', { class: 'btn btn--primary btn--large', href: bookUrl(dress) }, 'Book a fitting for this dress'),
        h('a', { class: 'btn btn--ghost btn--large', href: collectionUrl(dress.collection) }, `More ${dress.collection}`)),
      h('p', { class: 'dress-detail__note' },
        'Made to order in our Madrid workroom in five to seven months. The price includes three fittings and all alterations.')));

  replaceChildren(view, article);
  view.setAttribute('aria-busy', 'false');
  loadRelated(dress);
}

function renderNotFound(id) {
  document.title = 'Gown not found · Orta Novias';
  setCrumbs(null);
  replaceChildren(view, stateBlock({
    kind: 'not-found',
    headingLevel: 1,
    title: 'We could not find that gown',
    text: id
      ? `There is no gown number ${id} in our catalog. It may have left the collection, or the link may be incomplete.`
      : 'This link does not name a gown. Choose one from the catalog instead.',
    actions: [
      { label: 'Browse the catalog', href: '/catalog.html' },
      { label: 'Book a fitting', href: '/book.html' },
    ],
  }));
  view.setAttribute('aria-busy', 'false');
}

function renderError(id, err) {
  document.title = 'Gown · Orta Novias';
  replaceChildren(view, stateBlock({
    kind: 'error',
    headingLevel: 1,
    title: err instanceof ApiError && err.status === 429 ? 'One moment, please' : 'This gown is taking a while',
    text: describeError(err, 'this gown'),
    actions: [
      { label: 'Try again', onClick: () => load(id) },
      { label: 'Browse the catalog', href: '/catalog.html' },
    ],
  }));
  view.setAttribute('aria-busy', 'false');
}

async function loadRelated(dress) {
  try {
    const data = await listDresses({ collection: dress.collection, page: 1, perPage: 4 });
    const others = (Array.isArray(data && data.items) ? data.items : [])
      .filter((d) => String(d.id) !== String(dress.id))
      .slice(0, 3);
    if (!others.length) return;
    relatedTitle.textContent = `More from the ${dress.collection} collection`;
    replaceChildren(relatedGrid, others.map((d) => dressCard(d, { headingLevel: 3 })));
    related.hidden = false;
  } catch {
    related.hidden = true;
  }
}

async function load(id) {
  view.setAttribute('aria-busy', 'true');
  try {
    const dress = await getDress(id);
    if (!dress || typeof dress !== 'object' || dress.id === undefined) throw new ApiError(404, null);
    renderDress(dress);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) renderNotFound(id);
    else renderError(id, err);
  }
}

const id = (new URLSearchParams(window.location.search).get('id') || '').trim();
if (/^[1-9]\d{0,9}$/.test(id)) load(id);
else renderNotFound('');

