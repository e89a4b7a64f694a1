export function bundleIsCurrent(distDir: string): boolean;
export function entryArgs(packageDir: string): string[];
