// Jest transformer: erase TypeScript types with Node's own stripper, the same
// one `node src/main.ts` uses at run time, so tests run exactly the code that ships.
const { stripTypeScriptTypes } = require('node:module');

module.exports = {
  process(source, filename) {
    return { code: stripTypeScriptTypes(source, { mode: 'strip', sourceUrl: filename }) };
  },
};
