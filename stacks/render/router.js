// vllm-stack gateway router (njs 0.7+): picks the upstream from the JSON body's "model".
// nginx.conf maps $route_model -> $upstream_name; a js_var survives the internal redirect
// to @proxy, which forwards the original URI and the already-read body.

function fail(r, status, type, code, message) {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(status, JSON.stringify({error: {message: message, type: type, param: null, code: code}}) + '\n');
}

function route(r) {
    if (r.method !== 'POST') {
        fail(r, 405, 'invalid_request_error', 'method_not_allowed',
             'Method ' + r.method + ' is not allowed on ' + r.uri + '; use POST.');
        return;
    }
    var text;
    try {
        text = r.requestText;
    } catch (e) {
        // only when the body went to a temp file, which the config prevents
        fail(r, 413, 'invalid_request_error', 'request_too_large', 'Request body too large.');
        return;
    }
    var body;
    try {
        body = JSON.parse(text || '');
    } catch (e) {
        fail(r, 400, 'invalid_request_error', 'invalid_json', 'The request body is not valid JSON.');
        return;
    }
    if (body === null || typeof body !== 'object' || typeof body.model !== 'string' || body.model === '') {
        fail(r, 400, 'invalid_request_error', 'missing_model', 'The request body needs a "model" string.');
        return;
    }
    r.variables.route_model = body.model;
    if (!r.variables.upstream_name) {
        fail(r, 404, 'invalid_request_error', 'model_not_found',
             'The model `' + body.model + '` does not exist. GET /v1/models lists the served models.');
        return;
    }
    r.internalRedirect('@proxy');
}

export default {route};
