// Booking page: the #booking-form posts JSON to /api/appointments. The server has the last
// word: its 422 messages appear next to each field, a 409 on the time, and a 201 replaces the
// form with #booking-confirmation. /book.html?appointment=<id> shows a booking again, and
// /book.html?dress=N pre-selects a gown.

import './site.js';
import { ApiError, NetworkError, describeError, getJson, listDresses, postJson } from './api.js';
import { dressAlt, formatLongDate, formatPrice } from './format.js';
import { DAY_NAMES, isOpenDay, nextOpenDay, parseISODate, pastSlots, todayISO, weekday } from './hours.js';
import { dressImage, h, replaceChildren, stateBlock } from './ui.js';

const FIELDS = ['name', 'email', 'phone', 'date', 'slot', 'dress_id', 'notes'];
const LABELS = {
  name: 'Name', email: 'Email', phone: 'Phone', date: 'Date', slot: 'Time', dress_id: 'Gown', notes: 'Notes',
};
const PHONE = '+34 915 550 123';

const form = document.getElementById('booking-form');
const statusBox = document.getElementById('form-status');
const submitButton = document.getElementById('booking-submit');
const preview = document.getElementById('dress-preview');
const controls = {
  name: document.getElementById('name'),
  email: document.getElementById('email'),
  phone: document.getElementById('phone'),
  date: document.getElementById('date'),
  slot: document.getElementById('slot'),
  dress_id: document.getElementById('dress'),
  notes: document.getElementById('notes'),
};
const submitLabel = submitButton.textContent;

/** id (as a string) -> dress, from the API */
const dresses = new Map();
/** "YYYY-MM-DD HH:MM" pairs the server answered 409 for */
const takenSlots = new Set();
let sending = false;
let cooldownUntil = 0;
let cooldownTimer = 0;

/* ---------- field messages ---------- */

function errorElement(field) {
  return document.getElementById(`${field}-error`);
}

/**
 * Shows `message` under a field. The server's own words are kept as they are; a message such as
 * "is not a valid email address" gets the field's name in front of it (by CSS, from data-prefix).
 */
function setFieldError(field, message) {
  const el = errorElement(field);
  const control = controls[field];
  if (!el || !control) return false;
  const text = String(message || '').trim() || 'Please check this field.';
  if (/^(is|are|must|should|cannot|can't|can|has|have|was|were|needs?|may|does|do|not)\b/.test(text)) {
    el.dataset.prefix = LABELS[field];
  } else {
    delete el.dataset.prefix;
  }
  el.textContent = text;
  control.setAttribute('aria-invalid', 'true');
  const wrapper = control.closest('.field');
  if (wrapper) wrapper.classList.add('field--invalid');
  return true;
}

function clearFieldError(field) {
  const el = errorElement(field);
  const control = controls[field];
  if (el) {
    el.textContent = '';
    delete el.dataset.prefix;
  }
  if (control) {
    control.removeAttribute('aria-invalid');
    const wrapper = control.closest('.field');
    if (wrapper) wrapper.classList.remove('field--invalid');
  }
}

function hasError(field) {
  const el = errorElement(field);
  return Boolean(el && el.textContent);
}

function setStatus(kind, title, details = []) {
  if (!title) {
    statusBox.className = 'form-status';
    replaceChildren(statusBox);
    return;
  }
  statusBox.className = `form-status form-status--${kind}`;
  replaceChildren(statusBox,
    h('p', { class: 'form-status__title' }, title),
    details.length ? h('ul', { class: 'form-status__list' }, details.map((d) => h('li', {}, d))) : null);
}

function clearAllErrors() {
  FIELDS.forEach(clearFieldError);
  setStatus('');
}

function focusFirstInvalid() {
  const first = FIELDS.find((f) => hasError(f));
  if (first) controls[first].focus();
}

/* ---------- guidance while typing (the server still decides) ---------- */

function dateProblem(value) {
  if (!value) return '';
  if (!parseISODate(value)) return 'Please enter a valid date.';
  if (value < todayISO()) return 'Please choose today or a later date.';
  if (!isOpenDay(value)) {
    const next = nextOpenDay(value);
    return `We are closed on ${DAY_NAMES[weekday(value)]}s. The next opening day is ${formatLongDate(next)}.`;
  }
  return '';
}

const guidance = {
  name: (v) => (v.trim() ? '' : 'Please tell us your name.'),
  email: (v) => (/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v.trim()) ? '' : 'Please enter an email address, such as maria@example.com.'),
  phone: (v) => (v.replace(/\D/g, '').length >= 6 ? '' : 'Please enter a phone number we can reach you on.'),
  date: (v) => dateProblem(v),
  slot: (v) => {
    if (!v) return '';
    if (takenSlots.has(`${controls.date.value} ${v}`)) return 'This time is already booked on that day; please choose another.';
    return '';
  },
};

function checkField(field, { onlyIfFilled = true } = {}) {
  const rule = guidance[field];
  if (!rule) return;
  const value = controls[field].value;
  if (onlyIfFilled && !value.trim() && !hasError(field)) return;
  const problem = rule(value);
  if (problem) setFieldError(field, problem);
  else clearFieldError(field);
}

/** Disables today's slots that have already started; everything else stays choosable. */
function updateSlots() {
  const past = new Set(pastSlots(controls.date.value));
  for (const option of controls.slot.options) {
    if (!option.value) continue;
    option.disabled = past.has(option.value);
  }
  if (controls.slot.selectedOptions[0] && controls.slot.selectedOptions[0].disabled) controls.slot.value = '';
}

for (const field of ['name', 'email', 'phone']) {
  controls[field].addEventListener('blur', () => checkField(field));
  controls[field].addEventListener('input', () => {
    if (hasError(field) && !guidance[field](controls[field].value)) clearFieldError(field);
  });
}
controls.date.addEventListener('change', () => {
  updateSlots();
  checkField('date');
  checkField('slot');
});
controls.slot.addEventListener('change', () => checkField('slot'));
controls.notes.addEventListener('input', () => clearFieldError('notes'));

/* ---------- the gown select and its preview ---------- */

function ensureOption(id, label) {
  let option = Array.from(controls.dress_id.options).find((o) => o.value === id);
  if (!option) {
    option = h('option', { value: id }, label);
    controls.dress_id.append(option);
  }
  return option;
}

function renderPreview() {
  const dress = dresses.get(controls.dress_id.value);
  if (!dress) {
    preview.hidden = true;
    replaceChildren(preview);
    return;
  }
  replaceChildren(preview,
    h('img', { class: 'dress-preview__image', src: dressImage(dress), width: 300, height: 400, alt: dressAlt(dress) }),
    h('div', { class: 'dress-preview__body' },
      h('p', { class: 'dress-preview__label' }, 'Your gown'),
      h('p', { class: 'dress-preview__name' }, dress.name),
      h('p', { class: 'dress-preview__meta' }, `${dress.collection} · ${dress.silhouette} · ${formatPrice(dress.price_eur)}`),
      h('a', { class: 'link-arrow', href: `/dress.html?id=${encodeURIComponent(dress.id)}` }, 'View the gown')));
  preview.hidden = false;
}

async function loadDresses(preselect) {
  const select = controls.dress_id;
  if (preselect) {
    ensureOption(preselect, `Gown no. ${preselect}`);
    select.value = preselect;
  }
  const all = [];
  let order = [];
  try {
    let page = 1;
    let pages = 1;
    do {
      const data = await listDresses({ page, perPage: 50 });
      const items = Array.isArray(data && data.items) ? data.items : [];
      all.push(...items);
      if (page === 1 && Array.isArray(data.collections)) order = data.collections.slice();
      pages = Math.min(Number(data && data.pages) || 1, 20);
      page += 1;
    } while (page <= pages);
  } catch {
    if (preselect && !dresses.has(preselect)) {
      // the list failed: still try to name the pre-selected gown
      try {
        const dress = await getJson(`/api/dresses/${encodeURIComponent(preselect)}`);
        dresses.set(String(dress.id), dress);
        ensureOption(preselect, '').textContent = `${dress.name} · ${dress.collection}`;
        renderPreview();
      } catch {
        /* keep the placeholder option: the id is still sent */
      }
    }
    return;
  }

  const keep = select.value;
  const groups = new Map(order.map((c) => [c, []]));
  for (const d of all) {
    dresses.set(String(d.id), d);
    if (!groups.has(d.collection)) groups.set(d.collection, []);
    groups.get(d.collection).push(d);
  }
  const none = select.options[0];
  const optgroups = [];
  for (const [collection, items] of groups) {
    if (!items.length) continue;
    optgroups.push(h('optgroup', { label: collection },
      items.map((d) => h('option', { value: String(d.id) }, `${d.name} · ${formatPrice(d.price_eur)}`))));
  }
  replaceChildren(select, none, optgroups);
  if (keep && dresses.has(keep)) {
    select.value = keep;
  } else {
    select.value = '';
    if (keep && keep === preselect) {
      setFieldError('dress_id', `We could not find gown no. ${preselect} in the catalog; choose another or leave this empty.`);
    }
  }
  renderPreview();
}

controls.dress_id.addEventListener('change', () => {
  clearFieldError('dress_id');
  renderPreview();
});

/* ---------- submitting ---------- */

function payloadFromForm() {
  const payload = {
    name: controls.name.value.trim(),
    email: controls.email.value.trim(),
    phone: controls.phone.value.trim(),
    date: controls.date.value,
    slot: controls.slot.value,
  };
  const dressId = controls.dress_id.value;
  if (dressId && /^\d+$/.test(dressId)) payload.dress_id = Number(dressId);
  const notes = controls.notes.value.trim();
  if (notes) payload.notes = notes;
  return payload;
}

function setBusy(busy) {
  form.setAttribute('aria-busy', busy ? 'true' : 'false');
  if (busy) {
    submitButton.disabled = true;
    submitButton.textContent = 'Booking…';
  } else if (Date.now() >= cooldownUntil) {
    submitButton.disabled = false;
    submitButton.textContent = submitLabel;
  }
}

function startCooldown(seconds) {
  cooldownUntil = Date.now() + seconds * 1000;
  window.clearInterval(cooldownTimer);
  const tick = () => {
    const left = Math.ceil((cooldownUntil - Date.now()) / 1000);
    if (left <= 0) {
      window.clearInterval(cooldownTimer);
      submitButton.disabled = false;
      submitButton.textContent = submitLabel;
      return;
    }
    submitButton.disabled = true;
    submitButton.textContent = `Please wait ${left} s`;
  };
  tick();
  cooldownTimer = window.setInterval(tick, 500);
}

function handleError(err, payload) {
  if (err instanceof ApiError && err.status === 422) {
    const unknown = [];
    for (const [field, message] of Object.entries(err.fields)) {
      if (!setFieldError(field, message)) unknown.push(`${field}: ${message}`);
    }
    if (!Object.keys(err.fields).length && err.message) unknown.push(err.message);
    setStatus('error', 'Please check the highlighted fields and try again.', unknown);
    focusFirstInvalid();
    return;
  }
  if (err instanceof ApiError && err.status === 409) {
    const fields = err.fields;
    const entries = Object.entries(fields);
    if (!entries.length || !entries.some(([f]) => f in controls)) {
      setFieldError('slot', 'This time is already booked; please choose another.');
    }
    for (const [field, message] of entries) setFieldError(field, message);
    takenSlots.add(`${payload.date} ${payload.slot}`);
    setStatus('error', 'That time has just been booked. Please choose another time or day.');
    controls.slot.focus();
    return;
  }
  if (err instanceof ApiError && err.status === 429) {
    const wait = Math.min(Math.max(err.retryAfter || 5, 1), 60);
    setStatus('warning', 'Too many attempts. Please wait a moment before trying again.',
      [`You can try again in about ${wait} seconds; nothing has been booked yet.`]);
    startCooldown(wait);
    return;
  }
  if (err instanceof ApiError && err.status === 400) {
    setStatus('error', 'We could not read the form. Please check your details and try again.',
      [`If it keeps happening, call us on ${PHONE}.`]);
    return;
  }
  if (err instanceof NetworkError) {
    setStatus('error', describeError(err), ['Your fitting is not booked yet.']);
    return;
  }
  setStatus('error', 'Something went wrong on our side and your fitting is not booked yet.',
    [`Please try again in a moment, or call us on ${PHONE}.`]);
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (sending || Date.now() < cooldownUntil) return;
  clearAllErrors();
  const payload = payloadFromForm();
  sending = true;
  setBusy(true);
  try {
    const { body } = await postJson('/api/appointments', payload);
    const appointment = { ...payload, dress_id: payload.dress_id ?? null, ...(body || {}) };
    showConfirmation(appointment, { fresh: true });
  } catch (err) {
    handleError(err, payload);
  } finally {
    sending = false;
    setBusy(false);
  }
});

/* ---------- confirmation ---------- */

function detail(term, ...value) {
  return h('div', { class: 'confirmation__row' }, h('dt', {}, term), h('dd', {}, ...value));
}

function confirmationPanel(appt, { fresh }) {
  const id = appt.id ? String(appt.id) : '';
  const dress = appt.dress_id !== null && appt.dress_id !== undefined ? dresses.get(String(appt.dress_id)) : null;
  const firstName = String(appt.name || '').trim().split(/\s+/)[0];
  const statusText = String(appt.status || 'confirmed');
  const link = id ? `/book.html?appointment=${encodeURIComponent(id)}` : '';

  return h('section', {
    id: 'booking-confirmation',
    class: 'confirmation',
    tabindex: '-1',
    'aria-labelledby': 'confirmation-title',
  },
  h('p', { class: 'confirmation__badge' }, statusText === 'confirmed' ? 'Confirmed' : statusText),
  h('h2', { id: 'confirmation-title', class: 'confirmation__title' },
    fresh ? 'Your fitting is booked' : 'Your fitting at Orta Novias'),
  h('p', { class: 'confirmation__lead' },
    fresh
      ? `Thank you${firstName ? `, ${firstName}` : ''}. We look forward to welcoming you to the salon.`
      : `Here are the details of your appointment${firstName ? `, ${firstName}` : ''}.`),
  h('dl', { class: 'confirmation__details' },
    detail('Date',
      h('time', { datetime: appt.date || '' }, formatLongDate(appt.date)),
      h('span', { class: 'confirmation__iso' }, appt.date || '')),
    detail('Time', h('time', { datetime: appt.slot || '' }, appt.slot || '')),
    dress
      ? detail('Gown', h('a', { href: `/dress.html?id=${encodeURIComponent(dress.id)}` }, `${dress.name} (${dress.collection})`))
      : (appt.dress_id !== null && appt.dress_id !== undefined ? detail('Gown', `No. ${appt.dress_id}`) : null),
    detail('Status', statusText),
    id ? detail('Appointment number', h('code', { class: 'confirmation__id' }, id)) : null),
  h('p', { class: 'confirmation__text' },
    'Please keep your appointment number. If you need to change the time, call us on ',
    h('a', { href: 'tel:+34915550123' }, PHONE), '.'),
  link ? h('p', { class: 'confirmation__text' },
    'You can see this appointment again at any time: ',
    h('a', { href: link, class: 'confirmation__link' }, 'your appointment page'), '.') : null,
  h('div', { class: 'button-row' },
    h('a', { class: 'btn btn--primary', href: '/catalog.html' }, 'Keep browsing gowns'),
    h('a', { class: 'btn btn--ghost', href: '/book.html' }, 'Book another fitting')));
}

function showConfirmation(appt, { fresh }) {
  const panel = confirmationPanel(appt, { fresh });
  const old = document.getElementById('booking-confirmation');
  if (old) old.replaceWith(panel);
  else form.replaceWith(panel);
  panel.focus();
  if (fresh && appt.id) {
    window.history.replaceState(null, '', `/book.html?appointment=${encodeURIComponent(appt.id)}`);
  }
  document.title = fresh ? 'Fitting booked · Orta Novias' : 'Your fitting · Orta Novias';
}

async function showAppointment(id) {
  form.hidden = true;
  const holder = h('div', { class: 'state state--loading', 'aria-live': 'polite' },
    h('h2', { class: 'state__title' }, 'Finding your appointment…'));
  form.before(holder);
  try {
    const appt = await getJson(`/api/appointments/${encodeURIComponent(id)}`);
    await dressesReady;
    holder.remove();
    showConfirmation(appt || {}, { fresh: false });
  } catch (err) {
    const notFound = err instanceof ApiError && (err.status === 404 || err.status === 400);
    holder.replaceWith(stateBlock({
      kind: notFound ? 'not-found' : 'error',
      title: notFound ? 'We could not find that appointment' : 'Your appointment could not be loaded',
      text: notFound
        ? `Please check the link, or call us on ${PHONE} and we will find it for you.`
        : describeError(err, 'your appointment'),
      actions: [{ label: 'Book a fitting', href: '/book.html' }],
    }));
  }
}

/* ---------- start ---------- */

const params = new URLSearchParams(window.location.search);
const preselect = (params.get('dress') || '').trim();
const appointmentId = (params.get('appointment') || '').trim();

controls.date.min = todayISO();
const dressesReady = loadDresses(/^[1-9]\d{0,9}$/.test(preselect) ? preselect : '').catch(() => {});
if (appointmentId) showAppointment(appointmentId);

