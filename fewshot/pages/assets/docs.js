// Swagger UI over our corrected OpenAPI document. validatorUrl: null — otherwise Swagger UI shows a
// badge image fetched from validator.swagger.io, a request to a third party on every visit.
"use strict";
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "docs.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
