"""Checks shared by the web app's browser tests: accessibility basics and screenshots."""

from __future__ import annotations

import os

from livesrv import ROOT

SHOTS = ROOT / "docs" / "screenshots"


def shot(page, name: str) -> None:
    """With SIGHTLINE_SCREENSHOTS=1, write docs/screenshots/<name>.png of the page as it is."""
    if os.environ.get("SIGHTLINE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(400)  # let Plotly finish its transitions
        page.evaluate("() => { document.getElementById('toasts')?.replaceChildren(); window.scrollTo(0, 0); }")
        page.screenshot(path=str(SHOTS / f"{name}.png"))


def unlabeled_controls(page, scope: str = "") -> list[str]:
    """Visible form controls and buttons (inside ``scope``, a CSS selector) without a label."""
    return page.evaluate("""(scope) => [...document.querySelectorAll(
            ['input', 'select', 'textarea', 'button'].map(t => (scope ? scope + ' ' : '') + t).join(', '))]
        .filter(el => el.offsetParent !== null && el.type !== 'hidden')
        .filter(el => el.tagName === 'BUTTON' ? !(el.textContent.trim() || el.getAttribute('aria-label'))
                     : !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
        .map(el => el.outerHTML.slice(0, 120))""", scope)


LOW_CONTRAST = """() => {
  // WCAG contrast of every visible text element against its effective background colour
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const [r, g, b, a = 1] = m[1].split(',').map(Number); return {r, g, b, a}; };
  const lum = ({r, g, b}) => [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((acc, v, i) => acc + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => {
    let layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let out = {r: 255, g: 255, b: 255};
    for (const c of layers.reverse()) out = {r: c.r * c.a + out.r * (1 - c.a), g: c.g * c.a + out.g * (1 - c.a), b: c.b * c.a + out.b * (1 - c.a)};
    return out;
  };
  const bad = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('svg, .js-plotly-plot, option, [hidden]') || el.offsetParent === null) continue;
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.disabled) continue;
    const cs = getComputedStyle(el);
    const fg = parse(cs.color); const bg = background(el);
    const l1 = lum(fg), l2 = lum(bg);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const large = parseFloat(cs.fontSize) >= 24 || (parseFloat(cs.fontSize) >= 18.66 && Number(cs.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${ratio.toFixed(2)} ${el.tagName}.${el.className}: ${el.textContent.trim().slice(0, 40)}`);
  }
  return bad;
}"""
