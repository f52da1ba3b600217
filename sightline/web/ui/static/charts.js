// Charts for every insight kind, drawn with Plotly (served by Sightline from the plotly package).
let plotlyPromise = null;

/** Load plotly.min.js once (a classic script: it defines window.Plotly). */
export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyPromise) {
    plotlyPromise = new Promise((resolve, reject) => {
      const src = document.querySelector('meta[name="plotly-src"]')?.content || '/static/vendor/plotly.min.js';
      const s = document.createElement('script');
      s.src = src;
      s.async = true;
      s.onload = () => resolve(window.Plotly);
      s.onerror = () => { plotlyPromise = null; reject(new Error('could not load the charting library')); };
      document.head.append(s);
    });
  }
  return plotlyPromise;
}
