// Opening hours of the salon. The server enforces them; this module only guides the visitor.

/** Fitting start times, Tuesday to Saturday (closed 14:00-16:00 for lunch). */
export const SLOTS = ['10:00', '11:00', '12:00', '13:00', '16:00', '17:00', '18:00'];

/** Days of the week the salon opens (0 = Sunday ... 6 = Saturday). */
export const OPEN_DAYS = [2, 3, 4, 5, 6];

export const DAY_NAMES = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

const pad = (n) => String(n).padStart(2, '0');

/** The visitor's local date as YYYY-MM-DD. */
export function todayISO(now = new Date()) {
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}

/** Parses YYYY-MM-DD into a UTC Date, or null. */
export function parseISODate(iso) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(iso || ''));
  if (!m) return null;
  const d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  return d.getUTCMonth() === Number(m[2]) - 1 ? d : null;
}

export function weekday(iso) {
  const d = parseISODate(iso);
  return d ? d.getUTCDay() : null;
}

export function isOpenDay(iso) {
  return OPEN_DAYS.includes(weekday(iso));
}

export function addDays(iso, days) {
  const d = parseISODate(iso);
  if (!d) return null;
  d.setUTCDate(d.getUTCDate() + days);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}

/** The first opening day on or after `iso`. */
export function nextOpenDay(iso) {
  let day = iso;
  for (let i = 0; i < 7 && day; i += 1) {
    if (isOpenDay(day)) return day;
    day = addDays(day, 1);
  }
  return day;
}

/** Slots that already started today, for the visitor's clock. */
export function pastSlots(iso, now = new Date()) {
  if (iso !== todayISO(now)) return [];
  const minutes = now.getHours() * 60 + now.getMinutes();
  return SLOTS.filter((s) => {
    const [hh, mm] = s.split(':').map(Number);
    return hh * 60 + mm <= minutes;
  });
}

/** Weekday, hour and minute now in Madrid, whatever the visitor's time zone. */
export function madridNow(now = new Date()) {
  try {
    const parts = new Intl.DateTimeFormat('en-GB', {
      timeZone: 'Europe/Madrid',
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    }).formatToParts(now);
    const get = (type) => (parts.find((p) => p.type === type) || {}).value;
    const day = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'].indexOf(get('weekday'));
    return { day, minutes: Number(get('hour')) * 60 + Number(get('minute')) };
  } catch {
    return { day: now.getDay(), minutes: now.getHours() * 60 + now.getMinutes() };
  }
}

/** "Open now until 14:00", "Closed today · we open Tuesday at 10:00", ... (Madrid time). */
export function openStatus(now = new Date()) {
  const { day, minutes } = madridNow(now);
  const open = OPEN_DAYS.includes(day);
  const nextDayName = () => {
    for (let i = 1; i <= 7; i += 1) {
      const d = (day + i) % 7;
      if (OPEN_DAYS.includes(d)) return i === 1 ? 'tomorrow' : DAY_NAMES[d];
    }
    return 'soon';
  };
  if (!open) return { open: false, text: `Closed today · we open ${nextDayName()} at 10:00` };
  if (minutes < 600) return { open: false, text: 'Opens today at 10:00' };
  if (minutes < 840) return { open: true, text: 'Open now until 14:00' };
  if (minutes < 960) return { open: false, text: 'Closed for lunch · back at 16:00' };
  if (minutes < 1140) return { open: true, text: 'Open now until 19:00' };
  return { open: false, text: `Closed now · we open ${nextDayName()} at 10:00` };
}
