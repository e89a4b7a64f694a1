// A few line icons drawn here (no icon font, no request to anyone), 24x24 paths.
const PATHS: Record<string, string> = {
  inbox: 'M3 13h5l2 3h4l2-3h5M5 5h14l2 8v6H3v-6z',
  drafts: 'M4 20h4L19 9l-4-4L4 16zM13 7l4 4',
  sent: 'M3 11l18-8-8 18-2-8z',
  archive: 'M3 4h18v4H3zM5 8v12h14V8M10 12h4',
  junk: 'M12 3l9 16H3zM12 10v4M12 17v.5',
  trash: 'M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13',
  folder: 'M3 6h6l2 2h10v11H3z',
  clip: 'M8 12l6-6a3 3 0 014 4l-8 8a5 5 0 01-7-7l7-7',
  file: 'M6 3h8l4 4v14H6zM14 3v4h4',
  star: 'M12 3l2.7 5.6 6.1.9-4.4 4.3 1 6.1L12 17l-5.4 2.9 1-6.1L3.2 9.5l6.1-.9z',
  reply: 'M10 8L4 13l6 5M4 13h10a6 6 0 016 6',
  menu: 'M4 6h16M4 12h16M4 18h16',
  close: 'M6 6l12 12M18 6L6 18',
  mail: 'M3 6h18v12H3zM3 7l9 6 9-6',
  back: 'M15 5l-7 7 7 7',
  more: 'M5 12h.5M12 12h.5M19 12h.5',
  plus: 'M12 5v14M5 12h14',
};

export function Icon(props: { name: string; class?: string; filled?: boolean }) {
  return (
    <svg
      class={`icon ${props.class ?? ''}`}
      viewBox="0 0 24 24"
      width="18"
      height="18"
      aria-hidden="true"
      focusable="false"
      fill={props.filled ? 'currentColor' : 'none'}
      stroke="currentColor"
      stroke-width="1.8"
      stroke-linecap="round"
      stroke-linejoin="round"
    >
      <path d={PATHS[props.name] ?? PATHS.folder} />
    </svg>
  );
}
