export * from './maildir.js';
export * from './uidlist.js';
export * from './lock.js';
export * from './folder.js';
export * from './account.js';
export * from './index-cache.js';
export * from './maildirsize.js';
export * from './store-walk.js';
