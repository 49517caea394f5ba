// Runs on every page: footer year and today's opening status (Madrid time).

import { openStatus } from './hours.js';

function initFooter() {
  for (const el of document.querySelectorAll('[data-year]')) {
    el.textContent = String(new Date().getFullYear());
  }
  const today = document.querySelector('[data-open-today]');
  if (today) {
    const status = openStatus();
    today.textContent = `${status.text} (Madrid time)`;
    today.classList.toggle('open-today--open', status.open);
    today.hidden = false;
  }
}

document.documentElement.classList.add('js');
initFooter();
