// Minimal typing for the parts of pngjs (a devDependency without bundled types) the tests use.
declare module 'pngjs' {
  export const PNG: {
    sync: { read(buffer: Buffer): { width: number; height: number; data: Buffer } };
  };
}
