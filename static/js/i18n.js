/**
 * The page's language and texts. Every text a person reads comes from the server's
 * catalogue for one language (i18n/locales/<locale>.po, served as /i18n/<locale>.json):
 * `t(key, params)` in code, `data-i18n="key"` (text) and `data-i18n-attr="attr:key;…"`
 * (attributes) in markup.
 *
 * The language is, in order: the one the person chose on this device (the switch), the
 * link's (the join token's `lang` claim, minted from the link or its room), the
 * browser's, English.
 */

export const LOCALES = Object.freeze(['en', 'zh-CN']);
const DEFAULT_LOCALE = 'en';
const LANGUAGE_OF = {en: 'en', zh: 'zh-CN'};  // as i18n/catalogue.py supported_locale
const CHOICE_KEY = 'consult-sfu:language';

let current = DEFAULT_LOCALE;
let texts = {};
const changes = new EventTarget();

/** The locale we ship for a BCP 47 tag ("zh-Hans-CN" -> "zh-CN"), or null. */
export function supportedLocale(tag) {
  if (typeof tag !== 'string' || !tag) return null;
  return LANGUAGE_OF[tag.replace('_', '-').split('-')[0].toLowerCase()] ?? null;
}

/** The `lang` claim of a join token, read without checking it: it only picks texts. */
export function tokenLanguage(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return supportedLocale(JSON.parse(atob(payload)).lang);
  } catch {
    return null;
  }
}

function storedChoice() {
  try {
    return supportedLocale(localStorage.getItem(CHOICE_KEY));
  } catch {
    return null;  // storage disabled
  }
}

function browserLanguage() {
  for (const tag of navigator.languages ?? [navigator.language]) {
    const locale = supportedLocale(tag);
    if (locale) return locale;
  }
  return null;
}

/** Loads the page's language (see the module comment) and translates the markup. */
export async function initLanguage({token = null} = {}) {
  const wanted = storedChoice() ?? (token ? tokenLanguage(token) : null) ?? browserLanguage() ?? DEFAULT_LOCALE;
  await setLanguage(wanted);
}

/** Switches the page to `locale`; `remember` keeps it as this device's choice. */
export async function setLanguage(locale, {remember = false} = {}) {
  const chosen = supportedLocale(locale) ?? DEFAULT_LOCALE;
  try {
    texts = await fetchCatalogue(chosen);
    current = chosen;
  } catch (err) {
    console.error(`texts for ${chosen} could not be loaded`, err);
    if (Object.keys(texts).length) return;  // a switch that failed: the page keeps its language
    texts = chosen === DEFAULT_LOCALE ? {} : await fetchCatalogue(DEFAULT_LOCALE).catch(() => ({}));
    current = DEFAULT_LOCALE;
  }
  if (remember) {
    try {
      localStorage.setItem(CHOICE_KEY, current);
    } catch {
      // storage disabled: the choice lasts as long as the page
    }
  }
  document.documentElement.lang = current;
  applyTranslations(document);
  changes.dispatchEvent(new Event('change'));
}

async function fetchCatalogue(locale) {
  const response = await fetch(`/i18n/${locale}.json`);
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return (await response.json()).messages;
}

export function currentLanguage() {
  return current;
}

/** Calls `listener` after every change of language (to redraw texts set from code). */
export function onLanguageChange(listener) {
  changes.addEventListener('change', listener);
}

export function hasText(key) {
  return Object.hasOwn(texts, key);
}

/** Message `key` with `{name}` placeholders filled from `params`; the key itself if missing. */
export function t(key, params = {}) {
  const template = texts[key];
  if (template === undefined) {
    console.warn(`no text for ${key} in ${current}`);
    return key;
  }
  return template.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

/**
 * A counted message: `key.<CLDR plural category of count>` in the page's language
 * (English "one"/"other"; Chinese has only "other"), with `count` among the params.
 */
export function tn(key, count, params = {}) {
  const category = new Intl.PluralRules(current).select(count);
  return t(hasText(`${key}.${category}`) ? `${key}.${category}` : `${key}.other`, {count, ...params});
}

/** Items in a row, in the page's language ("a, b, c" / "a、b、c"). */
export function listText(items) {
  return items.join(t('list.separator'));
}

/** Translates `[data-i18n]` text and `[data-i18n-attr="aria-label:key;title:key"]` attributes under `root`. */
export function applyTranslations(root) {
  const selector = '[data-i18n], [data-i18n-attr]';
  const elements = [...root.querySelectorAll(selector)];
  if (root.matches?.(selector)) elements.unshift(root);
  for (const element of elements) {
    if (element.dataset.i18n) element.textContent = t(element.dataset.i18n);
    for (const pair of (element.dataset.i18nAttr ?? '').split(';')) {
      const [attribute, key] = pair.split(':').map((part) => part.trim());
      if (attribute && key) element.setAttribute(attribute, t(key));
    }
  }
}

/** A role's name in the page's language ("doctor" -> "Doctor" / "医生"). */
export function roleName(role) {
  return role ? t(`role.${role}`) : '';
}

/**
 * Wires a button that switches between the languages we ship: it is labelled with the
 * other language's own name ("中文" on an English page), so anyone can find it.
 */
export function bindLanguageSwitch(button) {
  const update = () => {
    const next = LOCALES[(LOCALES.indexOf(current) + 1) % LOCALES.length];
    button.dataset.next = next;
    button.textContent = t(`language.name.${next}`);
    button.setAttribute('lang', next);
    button.setAttribute('aria-label', `${t('language.label')}: ${t(`language.name.${next}`)}`);
  };
  button.addEventListener('click', () => setLanguage(button.dataset.next, {remember: true}));
  onLanguageChange(update);
  update();
}
