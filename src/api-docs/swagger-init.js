// Renders the gateway's own OpenAPI document. A file of its own, not an inline script, so the
// page's Content-Security-Policy can forbid inline scripts.
window.ui = window.SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  // No badge from the public validator service: the page makes no request to another site.
  validatorUrl: null,
  presets: [window.SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
});
