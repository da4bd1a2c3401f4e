// vllm-stack gateway router. Runs on njs 0.7.9 (Debian 12) to 1.0, on either of its engines (njs, or QuickJS
// with js_engine qjs): no engine-specific API.
//
// Body routing is nginx's own for ordinary bodies: the mirror module reads the body before the content phase
// and a PCRE map finds its top-level "model" (nginx.conf), so no JavaScript runs to route them.
// route:   js_set, evaluated only when that map finds no plain top-level "model" string (nested deeper than it
//          looks, escaped, chunked, 100 kB or more, or broken): the model, or a verdict that starts with a space
//          (nginx.conf maps verdicts to errors). The body is nginx's, read once.
// usage:   js_body_filter: passes every chunk on at once (one SSE event per token) and hands the answer's
//          tail to nginx ($gw_usage), whose maps read the last "usage" for the access log and the metrics.
// account: read in the log phase with gateway.requestMetrics: adds the finished request to the metrics in the
//          js_shared_dict_zone (njs >= 0.8; without it only the in-flight gauge is served).
// metrics: js_content of the internal metrics server, Prometheus text format.
// upstreamBody, endpointError: only for models served elsewhere (endpoints.py): an endpoint model's body with the
//          endpoint's model id, and an https endpoint's 502 answered after its TCP probe.
//
// Cost: njs builds the module's top level again for every request (the njs engine clones a VM per request),
// so the top level holds these functions and a few variables, nothing else. Every property access and call
// costs hundreds of instructions, and string searches a dozen per byte (njs 0.7.9: memcmp per position), so
// the filter does no search at all: nginx's PCRE reads the tail.
// State: QuickJS reuses contexts between requests (js_context_reuse), so module-level variables outlive a
// request; the filter's are keyed by the request object they belong to.

function route(r) {
    var text;
    try {
        text = r.requestText || '';
    } catch (e) {
        // njs < 0.8.10 cannot read a body nginx wrote to a temp file (and nginx unlinks the file at once): only a
        // chunked body whose chunk framing outgrew the buffer's quarter of slack (chunks under ~24 bytes) gets here
        return ' body_in_file';
    }
    var model = null;
    var parsed = false;
    if (text.length <= 65536) {  // larger bodies are scanned, not parsed: no third, parsed copy in memory
        try {
            var body = JSON.parse(text);
            model = body !== null && typeof body === 'object' && !Array.isArray(body) && body.model !== undefined ? body.model : null;
            parsed = true;
        } catch (e) {
            // not JSON, or nested deeper than the njs parser goes (32 levels): the scanner decides
        }
    }
    if (!parsed) {
        try {
            var span = modelSpan(text);
            model = span === undefined || span === null ? span : JSON.parse(text.slice(span[0], span[1]));
        } catch (e) {
            model = undefined;
        }
    }
    if (model === undefined) {
        return ' invalid_json';
    }
    if (typeof model !== 'string' || model === '') {
        return ' missing_model';
    }
    return model;
}

// Where the top-level "model" of a JSON object is, without building the object (any depth, any size): [start, end]
// of its value, null when there is none, undefined when the text is not one JSON object. Like JSON.parse, the last
// "model" wins. Values nested inside are skipped, not validated: the server validates the body it gets.
function modelSpan(t) {
    var STRUCT = /["{}\[\]]/g;
    var SCALAR = /^(-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?|true|false|null)$/;

    function skipWs(i) {
        var c = t.charCodeAt(i);
        while (c === 32 || c === 10 || c === 13 || c === 9) {
            c = t.charCodeAt(++i);
        }
        return i;
    }

    // index after the string starting at t[i] === '"', or -1
    function stringEnd(i) {
        var j = i + 1;
        for (;;) {
            var q = t.indexOf('"', j);
            if (q < 0) {
                return -1;
            }
            var n = 0;
            while (t.charCodeAt(q - 1 - n) === 92) {
                n++;
            }
            if (n % 2 === 0) {
                return q + 1;
            }
            j = q + 1;
        }
    }

    // index after the JSON value starting at t[i], or -1; nested values are skipped by counting brackets
    function valueEnd(i) {
        var c = t[i];
        if (c === '"') {
            return stringEnd(i);
        }
        if (c === '{' || c === '[') {
            var depth = 0;
            STRUCT.lastIndex = i;
            for (;;) {
                var m = STRUCT.exec(t);
                if (m === null) {
                    return -1;
                }
                var ch = m[0];
                if (ch === '"') {
                    var end = stringEnd(m.index);
                    if (end < 0) {
                        return -1;
                    }
                    STRUCT.lastIndex = end;
                } else if (ch === '{' || ch === '[') {
                    depth++;
                } else if (--depth === 0) {
                    return m.index + 1;
                }
            }
        }
        var j = i;
        while (j < t.length && ',}] \n\r\t'.indexOf(t[j]) < 0) {
            j++;
        }
        return j > i && SCALAR.test(t.slice(i, j)) ? j : -1;
    }

    var i = skipWs(0);
    if (t[i] !== '{') {
        return undefined;
    }
    i = skipWs(i + 1);
    var found = null;
    if (t[i] === '}') {
        return skipWs(i + 1) === t.length ? null : undefined;
    }
    for (;;) {
        if (t[i] !== '"') {
            return undefined;
        }
        var keyEnd = stringEnd(i);
        if (keyEnd < 0) {
            return undefined;
        }
        var key = t.slice(i, keyEnd);
        i = skipWs(keyEnd);
        if (t[i] !== ':') {
            return undefined;
        }
        i = skipWs(i + 1);
        var start = i;
        i = valueEnd(i);
        if (i < 0) {
            return undefined;
        }
        if (key === '"model"' || (key.indexOf('\\') >= 0 && JSON.parse(key) === 'model')) {
            found = [start, i];
        }
        i = skipWs(i);
        if (t[i] === ',') {
            i = skipWs(i + 1);
        } else if (t[i] === '}') {
            break;
        } else {
            return undefined;
        }
    }
    if (skipWs(i + 1) !== t.length) {
        return undefined;
    }
    return found;
}

// js_set of an endpoint model's internal server (proxy_set_body): the body with its top-level "model" set to the id
// the endpoint knows it by ($gw_ext_model); a body without one (a GET, or not a JSON object) passes as it is.
function upstreamBody(r) {
    var text = r.requestText || '';
    var span;
    try {
        span = modelSpan(text);
    } catch (e) {
        span = undefined;
    }
    if (!span) {
        return text;
    }
    return text.slice(0, span[0]) + JSON.stringify(r.variables.gw_ext_model) + text.slice(span[1]);
}

// js_content of an https endpoint's 502 page: answered in the content phase, once the TCP probe (auth_request, the
// access phase) has said whether the host answers at all ($gw_ep_502 names the cause)
function endpointError(r) {
    r.return(502, r.variables.gw_ep_502);
}

// The filter's state, for the request `owner` (QuickJS hands a reused context the next request): the last
// chunks passed on, so that a "usage" split between reads still reaches nginx whole.
var owner = null;
var undecided = false;
var prev = '';
var prev2 = '';
var prev3 = '';

function usage(r, data, flags) {
    // no flags argument: QuickJS would take an absent "flush" for false and hold a stream's chunks back
    r.sendBuffer(data);
    if (r !== owner) {
        owner = r;
        undecided = true;
        prev = prev2 = prev3 = '';
    }
    // the first chunk with data: an SSE answer starts with "data:", and one whose request asked for no usage
    // carries none, so filtering stops (the njs engine copies every filtered chunk into the request's memory
    // until the request ends). Data is a string, or a Buffer for what nginx itself answers inside an "if"
    if (undecided && data.length) {
        undecided = false;
        if (data[0] === 'd' && r.variables.gw_usage_off) {
            r.done();
            owner = null;
            return;
        }
    }
    if (flags.last) {
        var tail = prev3 + prev2 + prev + data;
        // the last "usage" sits within this of an answer's end (vLLM: only null fields follow it, unless the
        // request asked for prompt_logprobs, prompt_token_ids or the prompt text)
        r.variables.gw_usage = tail.length > 4096 ? tail.slice(-4096) : tail;
        owner = null;
        prev = prev2 = prev3 = '';
        return;
    }
    prev3 = prev2;
    prev2 = prev;
    prev = data;
}

// Set on first use (QuickJS keeps them with its context), not at the top level, which the njs engine runs for every
// request's VM: the upstream latency buckets (seconds: quick answers to long generations), the counters' shared
// dictionary (njs 0.8+; absent: no counters, only the in-flight gauge), and what account returns for the log line:
// nothing. QuickJS turns undefined into an empty value for free, but tries a string as a typed array first, which
// throws (njs 0.9.6 ngx_qjs_dump_obj); the njs engine would write "undefined".
var bounds;
var dict;
var nothing;

function latencyBuckets() {
    if (bounds === undefined) {
        bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
        dict = typeof ngx !== 'undefined' && ngx.shared ? ngx.shared.vllm_stack_gateway || null : null;
        nothing = njs.engine === 'QuickJS' ? undefined : '';
    }
    return bounds;
}

function account(r) {
    var buckets = latencyBuckets();
    if (dict === null) {
        return nothing;
    }
    // every property read and call costs hundreds to thousands of instructions: as few as the counters need
    var v = r.variables;
    var model = v.gw_log_model;
    var key = v.gw_key_label;
    try {
        dict.incr('requests\t' + model + '\t' + ((r.status / 100) | 0) + 'xx\t' + key, 1, 0);
        if (model !== '-') {
            // "0.012", or one figure per upstream tried, ", " between them (" : " after a redirect to an error page)
            var times = v.upstream_response_time;
            var secs = parseFloat(times);
            if (times.indexOf(' ') >= 0) {
                secs = times.split(' ').reduce(function (sum, x) { return sum + (parseFloat(x) || 0); }, 0);
            }
            if (secs >= 0) {
                var n = buckets.length;
                var b = 0;
                while (b < n && secs > buckets[b]) {
                    b++;
                }
                dict.incr('bucket\t' + model + '\t' + b, 1, 0);
                dict.incr('sum\t' + model, secs, 0);
            }
        }
        var prompt = v.gw_prompt_tokens;
        if (prompt !== 'null') {
            dict.incr('prompt\t' + model + '\t' + key, Number(prompt), 0);
            dict.incr('completion\t' + model + '\t' + key, Number(v.gw_completion_tokens), 0);
        }
    } catch (e) {
        // a full zone drops new series; requests are never failed for metrics
    }
    return nothing;
}

function metrics(r) {
    var out = [];
    var writing = Number(r.variables.connections_writing) || 1;
    out.push('# HELP vllm_stack_gateway_requests_in_flight Requests the gateway is handling now (this scrape not counted).');
    out.push('# TYPE vllm_stack_gateway_requests_in_flight gauge');
    out.push('vllm_stack_gateway_requests_in_flight ' + (writing - 1));
    var buckets = latencyBuckets();
    out.push('# HELP vllm_stack_gateway_info The gateway\'s njs and whether it keeps counters (gateway.requestMetrics, on njs 0.8+).');
    out.push('# TYPE vllm_stack_gateway_info gauge');
    out.push('vllm_stack_gateway_info{njs="' + njs.version + '",counters="' + (dict ? 'yes' : 'no') + '"} 1');
    if (dict) {
        var requests = [];
        var prompt = [];
        var completion = [];
        var perModel = {};
        var sums = {};
        dict.items().forEach(function (kv) {
            var f = kv[0].split('\t');
            if (f[0] === 'requests') {
                requests.push('vllm_stack_gateway_requests_total{model="' + f[1] + '",status_class="' + f[2] + '",key="' + f[3] + '"} ' + kv[1]);
            } else if (f[0] === 'prompt') {
                prompt.push('vllm_stack_gateway_prompt_tokens_total{' + 'model="' + f[1] + '",key="' + f[2] + '"' + '} ' + kv[1]);
            } else if (f[0] === 'completion') {
                completion.push('vllm_stack_gateway_completion_tokens_total{' + 'model="' + f[1] + '",key="' + f[2] + '"' + '} ' + kv[1]);
            } else if (f[0] === 'bucket') {
                (perModel[f[1]] = perModel[f[1]] || [])[Number(f[2])] = kv[1];
            } else if (f[0] === 'sum') {
                sums[f[1]] = kv[1];
            }
        });
        out.push('# HELP vllm_stack_gateway_requests_total Finished requests by served model ("-": none), status class and API key name ("-": none).');
        out.push('# TYPE vllm_stack_gateway_requests_total counter');
        out = out.concat(requests);
        out.push('# HELP vllm_stack_gateway_upstream_latency_seconds Time from connecting to vLLM to the end of its answer, per served model.');
        out.push('# TYPE vllm_stack_gateway_upstream_latency_seconds histogram');
        Object.keys(perModel).forEach(function (model) {
            var counts = perModel[model];
            var total = 0;
            for (var b = 0; b <= buckets.length; b++) {
                total += counts[b] || 0;
                var le = b < buckets.length ? String(buckets[b]) : '+Inf';
                out.push('vllm_stack_gateway_upstream_latency_seconds_bucket{model="' + model + '",le="' + le + '"} ' + total);
            }
            out.push('vllm_stack_gateway_upstream_latency_seconds_sum{model="' + model + '"} ' + (sums[model] || 0));
            out.push('vllm_stack_gateway_upstream_latency_seconds_count{model="' + model + '"} ' + total);
        });
        out.push('# HELP vllm_stack_gateway_prompt_tokens_total Prompt tokens vLLM reported in "usage", by served model and API key name.');
        out.push('# TYPE vllm_stack_gateway_prompt_tokens_total counter');
        out = out.concat(prompt);
        out.push('# HELP vllm_stack_gateway_completion_tokens_total Completion tokens vLLM reported in "usage", by served model and API key name.');
        out.push('# TYPE vllm_stack_gateway_completion_tokens_total counter');
        out = out.concat(completion);
    }
    r.headersOut['Content-Type'] = 'text/plain; version=0.0.4; charset=utf-8';
    r.return(200, out.join('\n') + '\n');
}

export default {route, usage, account, metrics, upstreamBody, endpointError};
