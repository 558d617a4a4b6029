/**
 * Stroke icons (24×24, drawn in currentColor; stroke style in common.css), built as
 * inline <svg> elements: no extra requests, and the off variants are the same
 * drawing struck through.
 */

const SVG_NS = 'http://www.w3.org/2000/svg';

const PATHS = {
  mic: 'M12 2.5a3 3 0 0 1 3 3V11a3 3 0 0 1-6 0V5.5a3 3 0 0 1 3-3zM5 11a7 7 0 0 0 14 0M12 18v3.5M8.5 21.5h7',
  cam: 'M4.5 6h9a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2h-9a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2zM15.5 10.5l6-3.5v10l-6-3.5z',
  flip: 'M3 8.5h3.5l2-2.5h7l2 2.5H21V19H3zM8.5 13a3.5 3.5 0 0 1 6.2-2.2M15.5 13a3.5 3.5 0 0 1-6.2 2.2'
    + 'M14.7 8.8v2h-2M9.3 17.2v-2h2',
  leave: 'M2.5 14.5c5.2-5.3 13.8-5.3 19 0l-2.6 2.6-3.4-1.6v-2.8c-2.3-.8-4.7-.8-7 0v2.8l-3.4 1.6z',
  sound: 'M3.5 9h4l5-4v14l-5-4h-4zM16 9a4 4 0 0 1 0 6M18.5 6.5a7.5 7.5 0 0 1 0 11',
  // drawing tools
  pen: 'M4 20l1.2-4.6L16.6 4a2.1 2.1 0 0 1 3 3L8.4 18.6zM14.6 6l3 3',
  circle: 'M12 4a8 8 0 1 0 0 16a8 8 0 1 0 0-16z',
  arrow: 'M5 19L18.5 5.5M10 5.5h8.5V14',
  text: 'M5 7V4.5h14V7M12 4.5v15M9 19.5h6',
  undo: 'M9 14.5L4 9.5l5-5M4 9.5h10.5a5.25 5.25 0 0 1 0 10.5H10',
  trash: 'M4 7h16M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3',
  // recording and photos
  rec: 'M12 5.5a6.5 6.5 0 1 0 0 13a6.5 6.5 0 1 0 0-13z',
  stop: 'M7 7h10v10H7z',
  check: 'M4.5 12.5l5 5L19.5 7',
  // a tile shown large (corners pointing out)
  expand: 'M4 9V4h5M15 4h5v5M20 15v5h-5M9 20H4v-5',
};
// Struck through: "mic-off" is the mic icon plus this line.
const SLASH = 'M3 3l18 18';

/**
 * Fills every `<svg data-icon="name">` of the page. With `data-toggle` the icon also
 * gets a slash that CSS shows while its button is switched off (.is-off).
 */
export function renderIcons() {
  for (const svg of document.querySelectorAll('svg[data-icon]')) {
    fillIcon(svg, svg.dataset.icon);
    if (svg.hasAttribute('data-toggle')) svg.append(pathElement(SLASH, 'icon-slash'));
  }
}

/** An icon that stands for words, e.g. labelledIcon('mic-off', 'Microphone off'). */
export function labelledIcon(name, label) {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  const title = document.createElementNS(SVG_NS, 'title');
  title.textContent = label;  // tooltip for mouse users
  svg.append(title);
  fillIcon(svg, name);
  return svg;
}

/** A decorative icon (aria-hidden), for a control whose label says what it does. */
export function icon(name) {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  fillIcon(svg, name);
  return svg;
}

function fillIcon(svg, name) {
  const off = name.endsWith('-off');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.append(pathElement(PATHS[off ? name.slice(0, -4) : name]));
  if (off) svg.append(pathElement(SLASH));
}

function pathElement(d, className = null) {
  const path = document.createElementNS(SVG_NS, 'path');
  path.setAttribute('d', d);
  if (className) path.setAttribute('class', className);
  return path;
}
