//! End to end through the binary: events streamed over gRPC land in a real
//! Elasticsearch-API server (osmem-server) and a real DynamoDB-protocol
//! server (moto), both started by tests/run. These tests fail, not skip,
//! without them.

mod support;

use std::process::Command;

use support::*;

fn server(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run the tests with tests/run, which starts the test servers")
    })
}

fn host_port(url: &str) -> std::net::SocketAddr {
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    std::net::ToSocketAddrs::to_socket_addrs(authority)
        .unwrap()
        .next()
        .unwrap()
}

const EVENTS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_grpc_events_land_in_elasticsearch_with_their_ids_and_template() {
    let url = server("EVENTSTASH_TEST_ELASTICSEARCH_URL");
    // HFXEventStash's template under a name and index pattern of this
    // test's own: another test's template on the shared server can neither
    // satisfy the check nor shape this test's index.
    let own = format!("e2e{}", unique_suffix());
    let shipped = std::fs::read(repo_root().join("templates/evt.json")).unwrap();
    let mut template: serde_json::Value = serde_json::from_slice(&shipped).unwrap();
    template["index_patterns"] = serde_json::json!([format!("{own}-*")]);
    let template_name = format!("{own}-tpl");
    let config = format!(
        "[[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n[[outputs]]\ntype = \"elasticsearch\"\nhosts = [\"{url}\"]\nindex = \"{own}-%{{index}}-%{{+xxxx-MM-ww}}\"\ntemplate = \"template.json\"\ntemplate_name = \"{template_name}\"\ntemplate_overwrite = true\n"
    );
    let mut options = AgentOptions::new(&config);
    options.files = vec![("template.json".to_owned(), template.to_string())];
    let agent = Agent::start(options);
    let kind = format!("endtoend.Run{}", agent.addr.port());
    let index = format!("{own}-endtoend-run-{}", agent.addr.port());
    let mut client = agent.client().await;
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(2500) {
        let events = chunk
            .iter()
            .map(|&n| json_event("es-", n, &kind, &format!("{{\"n\":{n}}}")))
            .collect();
        store_ok(&mut client, events).await;
    }

    let es = host_port(&url);
    let (status, body) = http_get(es, &format!("/{index}-*/_count"));
    assert_eq!(status, 200, "{body}");
    let count: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(count["count"], EVENTS, "{body}");
    let (status, body) = http_get(es, &format!("/{index}-*/_doc/es-1234"));
    let found = if status == 200 {
        body
    } else {
        // `_doc` needs a concrete index: find it.
        let (_, indices) = http_get(es, &format!("/_cat/indices/{index}-*?h=index"));
        let concrete = indices.lines().next().unwrap().trim().to_owned();
        http_get(es, &format!("/{concrete}/_doc/es-1234")).1
    };
    let document: serde_json::Value = serde_json::from_str(&found).unwrap();
    assert_eq!(document["_id"], "es-1234", "{found}");
    assert_eq!(document["_source"]["data"]["n"], 1234, "{found}");
    let (status, installed) = http_get(es, &format!("/_template/{template_name}"));
    assert_eq!(status, 200, "the template is not installed: {installed}");
    let installed: serde_json::Value = serde_json::from_str(&installed).unwrap();
    assert_eq!(installed[&template_name]["index_patterns"][0], format!("{own}-*"));
    // It shaped the index: HFXEventStash's mapping of `format`.
    let concrete = document["_index"].as_str().unwrap().to_owned();
    let (_, mapping) = http_get(es, &format!("/{concrete}/_mapping"));
    let mapping: serde_json::Value = serde_json::from_str(&mapping).unwrap();
    assert_eq!(
        mapping[&concrete]["mappings"]["properties"]["format"]["type"], "keyword",
        "{mapping}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_grpc_events_land_in_dynamodb_and_are_found_by_both_indexes() {
    let url = server("EVENTSTASH_TEST_DYNAMODB_URL");
    let table = format!("e2e-events-{}", unique_suffix());
    let config = format!(
        "[pipeline]\nid = \"e2e\"\n[[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n[[outputs]]\ntype = \"dynamodb\"\ntable = \"{table}\"\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\ncreate_table = true\nconcurrency = 2\n"
    );
    let agent = Agent::start(AgentOptions::new(&config));
    let mut client = agent.client().await;
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(2500) {
        let events = chunk
            .iter()
            .map(|&n| {
                json_event(
                    "ddb-",
                    n,
                    "e2e.Stored",
                    &format!("{{\"n\":{n},\"big\":12345678901234567890123}}"),
                )
            })
            .collect();
        store_ok(&mut client, events).await;
    }

    // Read back with boto3 (installed with moto), by each index.
    let script = r##"
import sys, boto3
url, table = sys.argv[1], sys.argv[2]
db = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
def count(index, key, value):
    total, start = 0, None
    while True:
        args = dict(TableName=table, IndexName=index, KeyConditionExpression="#k = :v",
                    ExpressionAttributeNames={"#k": key}, ExpressionAttributeValues={":v": {"S": value}}, Select="COUNT")
        if start: args["ExclusiveStartKey"] = start
        page = db.query(**args)
        total += page["Count"]
        start = page.get("LastEvaluatedKey")
        if not start: return total
item = db.get_item(TableName=table, Key={"RequestId": {"S": "ddb-42"}, "Timestamp": {"S": db.query(TableName=table, KeyConditionExpression="RequestId = :r", ExpressionAttributeValues={":r": {"S": "ddb-42"}})["Items"][0]["Timestamp"]["S"]}})["Item"]
print(count("Type-Index", "Type", "e2e.Stored"), count("Source-Index", "Source", "e2e"), item["Data"]["M"]["big"]["N"])
"##;
    let stdout = run_ok(Command::new(python()).args(["-c", script, &url, &table]));
    assert_eq!(stdout.trim(), format!("{EVENTS} {EVENTS} 12345678901234567890123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_dynamodb_cannot_hold_are_dead_lettered_and_their_neighbours_stored() {
    let url = server("EVENTSTASH_TEST_DYNAMODB_URL");
    let table = format!("e2e-numbers-{}", unique_suffix());
    let config = format!(
        "[pipeline]\nid = \"e2e\"\n[[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n[[outputs]]\ntype = \"dynamodb\"\ntable = \"{table}\"\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\ncreate_table = true\ndead_letter_path = \"dlq.jsonl\"\n"
    );
    let agent = Agent::start(AgentOptions::new(&config));
    let mut client = agent.client().await;
    let events = vec![
        json_event("num-", 0, "e2e.Number", r#"{"n":1}"#),
        json_event("num-", 1, "e2e.Number", r#"{"n":1e200}"#),
        json_event(
            "num-",
            2,
            "e2e.Number",
            r#"{"n":1.234567890123456789012345678901234567891}"#,
        ),
        json_event("num-", 3, "e2e.Number", r#"{"n":-9.99e125}"#),
    ];
    // Stored or dead-lettered, every event is safe: the stream succeeds.
    store_ok(&mut client, events).await;

    let letters = read_documents(&agent.path("dlq.jsonl"));
    let lettered: Vec<&str> = letters.iter().map(|l| l["event"]["id"].as_str().unwrap()).collect();
    assert_eq!(lettered, ["num-1", "num-2"], "{letters:?}");
    let reasons: Vec<&str> = letters.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].contains("outside DynamoDB's range"), "{reasons:?}");
    assert!(reasons[1].contains("38 significant digits"), "{reasons:?}");

    let script = r##"
import sys, boto3
url, table = sys.argv[1], sys.argv[2]
db = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
items = db.scan(TableName=table)["Items"]
print(" ".join(sorted(i["RequestId"]["S"] + "=" + i["Data"]["M"]["n"]["N"] for i in items)))
"##;
    let stdout = run_ok(Command::new(python()).args(["-c", script, &url, &table]));
    assert_eq!(stdout.trim(), "num-0=1 num-3=-9.99e125");
}
