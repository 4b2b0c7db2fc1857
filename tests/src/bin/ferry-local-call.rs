//! A minimal client of ferryd's local API, for tests that must call it as another user:
//! `ferry-local-call SOCKET migrate PID TO`. Prints `ok` or `status CODE: MESSAGE` (the first
//! error of the call or of its stream) and exits 0; exits 1 when it cannot connect.

use std::process::ExitCode;

use ferry_proto::v1::MigrateRequest;
use ferry_proto::v1::agent_client::AgentClient;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, method, pid, to] = args.as_slice() else {
        eprintln!("usage: ferry-local-call SOCKET migrate PID TO");
        return ExitCode::FAILURE;
    };
    if method != "migrate" {
        eprintln!("unknown method {method}");
        return ExitCode::FAILURE;
    }
    let pid: i32 = match pid.as_str() {
        "self" => i32::try_from(std::process::id()).expect("pid fits i32"),
        other => other.parse().expect("PID is a number or `self`"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut client = match AgentClient::connect(format!("unix://{socket}")).await {
            Ok(c) => c,
            Err(err) => {
                eprintln!("connect to {socket}: {err:?}");
                return ExitCode::FAILURE;
            }
        };
        let req = MigrateRequest {
            pid,
            to: to.clone(),
            compress: "auto".to_owned(),
            ship_files: false,
            proxy_protocol: Vec::new(),
            ..Default::default()
        };
        let outcome = match client.migrate(req).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break Ok(()),
                        Err(status) => break Err(status),
                    }
                }
            }
            Err(status) => Err(status),
        };
        match outcome {
            Ok(()) => println!("ok"),
            Err(status) => println!("status {:?}: {}", status.code(), status.message()),
        }
        ExitCode::SUCCESS
    })
}
