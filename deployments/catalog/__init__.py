"""The product catalog's serving side: the Catalog deployment (deployment), the ingress's calls to it (calls),
its HTTP side (http_side), each ingress replica's copy of its vectors (ingress_copy), and the operator page
(ui.html, served at /ui, with its scripts ui.js and ui_changes.js)."""
