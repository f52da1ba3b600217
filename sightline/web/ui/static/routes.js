// The page table: a path pattern (":name" captures one segment) → a module in pages/.
// To add a page: add a line here and write pages/<page>.js exporting `render(main, ctx)`.
// `public: true` pages need no sign-in; `bare: true` pages are drawn without the sidebar.
export const routes = [
  { path: '/', page: 'dashboards', nav: 'dashboards', home: true },
  { path: '/login', page: 'login', public: true, bare: true },
  { path: '/setup', page: 'setup', public: true, bare: true },
  { path: '/dashboard', page: 'dashboards', nav: 'dashboards' },
  { path: '/dashboard/:id', page: 'dashboard', nav: 'dashboards' },
  { path: '/insights', page: 'insights', nav: 'insights' },
  { path: '/insights/new', page: 'insight', nav: 'insights' },
  { path: '/insights/:id', page: 'insight', nav: 'insights' },
  { path: '/events', page: 'events', nav: 'events' },
  { path: '/persons', page: 'persons', nav: 'persons' },
  { path: '/persons/:id', page: 'persons', nav: 'persons' },
  { path: '/feature_flags', page: 'feature_flags', nav: 'feature_flags' },
  { path: '/feature_flags/:id', page: 'feature_flags', nav: 'feature_flags' },
  { path: '/experiments', page: 'experiments', nav: 'experiments' },
  { path: '/experiments/:id', page: 'experiments', nav: 'experiments' },
  { path: '/settings', page: 'settings', nav: 'settings' },
];

// The sidebar, top to bottom.
export const nav = [
  { id: 'dashboards', label: 'Dashboards', href: '/dashboard', icon: 'M3 3h8v8H3zM13 3h8v5h-8zM13 10h8v11h-8zM3 13h8v8H3z' },
  { id: 'insights', label: 'Insights', href: '/insights', icon: 'M3 20l6-7 4 3 8-10M3 3v18h18' },
  { id: 'events', label: 'Live events', href: '/events', icon: 'M3 12h4l3-8 4 16 3-8h4' },
  { id: 'persons', label: 'Persons', href: '/persons', icon: 'M12 12a4 4 0 100-8 4 4 0 000 8zM4 21a8 8 0 0116 0' },
  { id: 'feature_flags', label: 'Feature flags', href: '/feature_flags', icon: 'M5 21V4M5 4h11l-2 4 2 4H5' },
  { id: 'experiments', label: 'Experiments', href: '/experiments', icon: 'M9 3h6M10 3v6l-5 10a1 1 0 001 2h12a1 1 0 001-2l-5-10V3' },
  { id: 'settings', label: 'Set-up', href: '/settings', icon: 'M12 15a3 3 0 100-6 3 3 0 000 6zM19 12a7 7 0 00-.1-1.2l2-1.6-2-3.4-2.4 1a7 7 0 00-2-1.2L14 3h-4l-.5 2.6a7 7 0 00-2 1.2l-2.4-1-2 3.4 2 1.6a7 7 0 000 2.4l-2 1.6 2 3.4 2.4-1a7 7 0 002 1.2L10 21h4l.5-2.6a7 7 0 002-1.2l2.4 1 2-3.4-2-1.6c.1-.4.1-.8.1-1.2z' },
];
