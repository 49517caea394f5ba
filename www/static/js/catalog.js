// Catalog page: filter bar, grid of dress cards, pagination. The filter state lives in the
// URL (?collection=&q=&page=), so results can be shared, bookmarked and navigated with Back.

import './site.js';
import { listDresses, describeError } from './api.js';
import { dressCard, h, replaceChildren, skeletonCards, stateBlock } from './ui.js';

const PER_PAGE = 12;
const TYPE_DELAY_MS = 350;

const form = document.getElementById('catalog-filters');
const selectCollection = document.getElementById('filter-collection');
const inputQ = document.getElementById('filter-q');
const resetLink = document.getElementById('filter-reset');
const grid = document.getElementById('catalog-grid');
const status = document.getElementById('catalog-status');
const message = document.getElementById('catalog-message');
const pagination = document.getElementById('catalog-pagination');

let controller = null;
let typingTimer = 0;
let current = readState(window.location.search);
let firstLoad = true;

/** { collection, q, page } from a query string (form submissions use "+" for spaces). */
function readState(search) {
  const params = new URLSearchParams(search);
  const page = Number.parseInt(params.get('page') || '1', 10);
  return {
    collection: (params.get('collection') || '').trim(),
    q: (params.get('q') || '').trim(),
    page: Number.isInteger(page) && page > 0 ? page : 1,
  };
}

/** The page's own URL for a state: defaults are left out. */
function pageUrl(state) {
  const parts = [];
  if (state.collection) parts.push(`collection=${encodeURIComponent(state.collection)}`);
  if (state.q) parts.push(`q=${encodeURIComponent(state.q)}`);
  if (state.page > 1) parts.push(`page=${state.page}`);
  return `/catalog.html${parts.length ? `?${parts.join('&')}` : ''}`;
}

function sameState(a, b) {
  return a.collection === b.collection && a.q === b.q && a.page === b.page;
}

/** Keeps the select's options in step with the API's list of collections. */
function syncCollections(collections, selected) {
  const names = Array.isArray(collections) ? collections.filter((c) => typeof c === 'string') : [];
  if (selected && !names.includes(selected)) names.push(selected);
  const existing = Array.from(selectCollection.options).slice(1).map((o) => o.value);
  if (names.length && names.join('\u0000') !== existing.join('\u0000')) {
    const all = selectCollection.options[0];
    replaceChildren(selectCollection, all, names.map((n) => h('option', { value: n }, n)));
  }
  selectCollection.value = selected;
}

function syncForm(state) {
  if (state.collection && !Array.from(selectCollection.options).some((o) => o.value === state.collection)) {
    selectCollection.append(h('option', { value: state.collection }, state.collection));
  }
  selectCollection.value = state.collection;
  if (document.activeElement !== inputQ) inputQ.value = state.q;
  resetLink.hidden = !state.collection && !state.q;
}

function describeFilters(state) {
  const bits = [];
  if (state.collection) bits.push(`in ${state.collection}`);
  if (state.q) bits.push(`matching “${state.q}”`);
  return bits.length ? ` ${bits.join(' ')}` : '';
}

function setTitle(state) {
  const prefix = state.collection ? `${state.collection} collection` : 'The catalog';
  const page = state.page > 1 ? ` · page ${state.page}` : '';
  document.title = `${prefix}${page} · Orta Novias`;
}

function showLoading() {
  grid.setAttribute('aria-busy', 'true');
  message.hidden = true;
  status.textContent = 'Loading gowns…';
  if (firstLoad || !grid.querySelector('.dress-card')) {
    replaceChildren(grid, skeletonCards(6));
  } else {
    grid.classList.add('is-loading');
  }
}

function doneLoading() {
  grid.setAttribute('aria-busy', 'false');
  grid.classList.remove('is-loading');
  firstLoad = false;
}

function pageLink(state, page, label, rel) {
  const cls = `btn btn--ghost pagination__link pagination__link--${rel}`;
  if (page < 1) {
    return h('span', { class: `${cls} is-disabled`, 'aria-disabled': 'true' }, label);
  }
  const a = h('a', { class: cls, href: pageUrl({ ...state, page }), rel }, label);
  a.addEventListener('click', (event) => {
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey || event.button !== 0) return;
    event.preventDefault();
    navigate({ ...state, page }, { push: true, scroll: true });
  });
  return a;
}

function renderPagination(state, pages) {
  if (!pages || pages <= 1) {
    pagination.hidden = true;
    replaceChildren(pagination);
    return;
  }
  replaceChildren(pagination,
    pageLink(state, state.page > 1 ? state.page - 1 : 0, '← Previous', 'prev'),
    h('p', { class: 'pagination__info' },
      'Page ', h('strong', {}, String(state.page)), ' of ', h('strong', {}, String(pages))),
    pageLink(state, state.page < pages ? state.page + 1 : 0, 'Next →', 'next'));
  pagination.hidden = false;
}

function showMessage(block) {
  replaceChildren(message, block);
  message.hidden = false;
}

function render(state, data) {
  const items = Array.isArray(data && data.items) ? data.items : [];
  const total = Number(data && data.total) || 0;
  const pages = Number(data && data.pages) || 0;
  const perPage = Number(data && data.per_page) || PER_PAGE;
  const page = Number(data && data.page) || state.page;
  syncCollections(data && data.collections, state.collection);

  replaceChildren(grid, items.map((d) => dressCard(d, { headingLevel: 2 })));

  if (!items.length) {
    const filtered = Boolean(state.collection || state.q);
    if (total > 0 && state.page > 1) {
      status.textContent = `There is no page ${state.page}${describeFilters(state)}.`;
      showMessage(stateBlock({
        kind: 'empty',
        title: 'This page is empty',
        text: `${pages === 1 ? 'There is only one page' : `There are only ${pages} pages`} of gowns${describeFilters(state)}.`,
        actions: [{ label: 'Go to the first page', href: pageUrl({ ...state, page: 1 }) }],
      }));
    } else {
      status.textContent = `No gowns found${describeFilters(state)}.`;
      showMessage(stateBlock({
        kind: 'empty',
        title: 'No gowns match your search',
        text: filtered
          ? 'Try another word, or look through every collection. Our consultants can also adapt a gown for you.'
          : 'The catalog is being updated. Please come back soon.',
        actions: filtered ? [{ label: 'Show all gowns', href: '/catalog.html' }] : [],
      }));
    }
    wireStateLinks();
    renderPagination(state, 0);
    return;
  }

  const first = (page - 1) * perPage + 1;
  const last = first + items.length - 1;
  status.textContent = `Showing ${first}–${last} of ${total} gown${total === 1 ? '' : 's'}${describeFilters(state)}.`;
  renderPagination({ ...state, page }, pages);
}

/** Links inside the empty state navigate without a reload too. */
function wireStateLinks() {
  for (const a of message.querySelectorAll('a[href^="/catalog.html"]')) {
    a.addEventListener('click', (event) => {
      if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey || event.button !== 0) return;
      event.preventDefault();
      navigate(readState(new URL(a.href).search), { push: true });
    });
  }
}

function renderError(state, err) {
  replaceChildren(grid);
  renderPagination(state, 0);
  status.textContent = 'The catalog could not be loaded.';
  showMessage(stateBlock({
    kind: 'error',
    title: err && err.status === 429 ? 'One moment, please' : 'We could not load the catalog',
    text: describeError(err, 'the catalog'),
    actions: [{ label: 'Try again', onClick: () => load(current) }],
  }));
}

async function load(state) {
  if (controller) controller.abort();
  controller = new AbortController();
  const { signal } = controller;
  current = state;
  syncForm(state);
  setTitle(state);
  showLoading();
  try {
    const data = await listDresses({ ...state, perPage: PER_PAGE }, { signal });
    if (signal.aborted) return;
    render(state, data);
  } catch (err) {
    if (err && err.name === 'AbortError') return;
    renderError(state, err);
  } finally {
    if (!signal.aborted) doneLoading();
  }
}

function navigate(state, { push = true, replace = false, scroll = false } = {}) {
  const url = pageUrl(state);
  const here = window.location.pathname + window.location.search;
  if (url !== here) {
    if (push && !replace) window.history.pushState(state, '', url);
    else window.history.replaceState(state, '', url);
  }
  if (scroll) form.scrollIntoView({ block: 'start' });
  load(state);
}

function stateFromForm() {
  return { collection: selectCollection.value, q: inputQ.value.trim(), page: 1 };
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  window.clearTimeout(typingTimer);
  const next = stateFromForm();
  if (sameState(next, current)) load(next);
  else navigate(next, { push: true });
});

selectCollection.addEventListener('change', () => {
  window.clearTimeout(typingTimer);
  navigate(stateFromForm(), { push: true });
});

inputQ.addEventListener('input', () => {
  window.clearTimeout(typingTimer);
  typingTimer = window.setTimeout(() => {
    const next = stateFromForm();
    if (!sameState(next, current)) navigate(next, { replace: true });
  }, TYPE_DELAY_MS);
});

resetLink.addEventListener('click', (event) => {
  event.preventDefault();
  window.clearTimeout(typingTimer);
  inputQ.value = '';
  navigate({ collection: '', q: '', page: 1 }, { push: true });
  inputQ.focus();
});

window.addEventListener('popstate', () => {
  window.clearTimeout(typingTimer);
  load(readState(window.location.search));
});

// Normalise the address (e.g. "+" for spaces from a plain form submission) and load.
window.history.replaceState(current, '', pageUrl(current));
load(current);
