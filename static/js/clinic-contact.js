/**
 * "Need help? <how to reach the clinic>" on the patient's waiting room and on every end or
 * error screen. The line is the server's: the room's (`joined`), a refused join's (the room's
 * when the link was genuine, else the server's own), or, for a page that never reached a room
 * (a link cut short), the server's own from /api/info. No line when there is none.
 */

import {onLanguageChange, t} from './i18n.js';

const bound = new WeakSet();  // elements redrawn on language changes
let serverContact = null;     // a promise of /api/info's clinic_contact, fetched once if needed

/** The server's own contact line (--clinic-contact), or null. */
export function fetchServerContact() {
  serverContact ??= fetch('/api/info')
    .then((response) => (response.ok ? response.json() : {}))
    .then((info) => (typeof info.clinic_contact === 'string' ? info.clinic_contact : null))
    .catch(() => null);
  return serverContact;
}

/** Shows `contact` (text, or null for none) in `element`, in the page's language. */
export function showContact(element, contact) {
  element.dataset.contact = contact ?? '';
  if (!bound.has(element)) {
    bound.add(element);
    onLanguageChange(() => render(element));
  }
  render(element);
}

/** `contact`, or the server's own line when it is null (nothing heard from a room). */
export async function showContactOrServers(element, contact) {
  showContact(element, contact);
  if (contact === null) showContact(element, await fetchServerContact());
}

function render(element) {
  const contact = element.dataset.contact;
  element.hidden = !contact;
  const text = contact ? t('contact.help', {contact}) : '';
  if (element.textContent !== text) element.textContent = text;
}
