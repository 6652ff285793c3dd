// The API docs page: Swagger UI (served from the installed package) on this server's schema.
// Requests from "Try it out" carry the session's CSRF token, as the dashboard's own do.

const body = document.body;
const csrf = body.dataset.csrf || "";

window.ui = SwaggerUIBundle({
  url: body.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  requestInterceptor: (request) => {
    if (csrf) request.headers["X-CSRF-Token"] = csrf;
    return request;
  },
});
