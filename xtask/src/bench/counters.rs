//! Each proxy's own count of the requests it served, read from its metrics
//! endpoint after the runs: proof that the metrics were on and that the load
//! went through the proxy's HTTP path.

use anyhow::{Context, Result};

use super::peers::{Kind, Proxy, http_get};

/// Downstream requests the proxy counted (probes and warm-up included).
pub fn requests_counted(proxy: &Proxy) -> Result<u64> {
    let (path, parse): (&str, fn(&str) -> Option<u64>) = match proxy.kind {
        Kind::Weir | Kind::WeirLog => ("/stats/prometheus", weir_requests),
        Kind::Envoy => ("/stats?filter=downstream_rq_total", envoy_requests),
        Kind::Nginx => ("/stub_status", nginx_requests),
    };
    let (status, body) = http_get(proxy.admin, path)?;
    parse(&body).with_context(|| {
        format!(
            "no request count in {}'s {path} (status {status})",
            proxy.kind.name()
        )
    })
}

/// Sum of `weir_http_downstream_requests_total{...} N` over its labels.
fn weir_requests(text: &str) -> Option<u64> {
    let values: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("weir_http_downstream_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Sum of `http.ingress_<listener>.downstream_rq_total: N` over the
/// listeners (plaintext, TLS, h2c); the admin's own is not counted.
fn envoy_requests(text: &str) -> Option<u64> {
    let values: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("http.ingress_"))
        .filter_map(|l| l.split_once(".downstream_rq_total:"))
        .filter_map(|(_, v)| v.trim().parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// stub_status: the third number under `server accepts handled requests`.
fn nginx_requests(text: &str) -> Option<u64> {
    let mut lines = text.lines();
    lines.find(|l| l.trim() == "server accepts handled requests")?;
    lines.next()?.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_each_metrics_format() {
        let weir = "# TYPE weir_http_downstream_requests_total counter\n\
            weir_http_downstream_requests_total{listener=\"ingress_http\",class=\"2xx\"} 1200\n\
            weir_http_downstream_requests_total{listener=\"ingress_http\",class=\"5xx\"} 3\n";
        assert_eq!(weir_requests(weir), Some(1203));
        assert_eq!(weir_requests("# nothing\n"), None);
        let envoy =
            "http.admin.downstream_rq_total: 7\nhttp.ingress_http.downstream_rq_total: 4567\n";
        assert_eq!(envoy_requests(envoy), Some(4567));
        let envoy = format!(
            "{envoy}http.ingress_https.downstream_rq_total: 100\n\
             http.ingress_h2c.downstream_rq_total: 20\n"
        );
        assert_eq!(envoy_requests(&envoy), Some(4687));
        assert_eq!(envoy_requests("http.admin.downstream_rq_total: 7\n"), None);
        let nginx = "Active connections: 1 \nserver accepts handled requests\n 10 10 890 \nReading: 0 Writing: 1 Waiting: 0 \n";
        assert_eq!(nginx_requests(nginx), Some(890));
    }
}
