//! The `govmx up` demo: an agency official invites a citizen across federation and the
//! citizen's server receives the agency's message. Plain client-server API calls (reqwest).
//!
//! Logins and the room are recorded in `<state>/demo.json` and reused on the next run.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::synapse::{Credentials, Homeserver, call_json};
use crate::util::{random_hex, write_file};
use crate::{Result, Stack, StackError};

/// How long the citizen's `/sync` may take to show the agency's message.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

/// The agency official's localpart.
pub const AGENCY_USER: &str = "amt";
/// The citizen's localpart.
pub const CITIZEN_USER: &str = "erika";

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// The agency official's user id and password.
    pub agency_login: (String, String),
    /// The citizen's user id and password.
    pub citizen_login: (String, String),
    /// The room (on the agency server).
    pub room_id: String,
    /// Whether the room was created by this run (else reused from the state directory).
    pub room_created: bool,
    /// The event id of the agency's message.
    pub event_id: String,
    /// From sending on the agency server to seeing it in the citizen's `/sync`.
    pub delivery: Duration,
    /// The whole scenario.
    pub total: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
struct DemoState {
    agency_password: String,
    citizen_password: String,
    room_id: Option<String>,
    /// Sessions of the last run: reused when still valid (saves two bcrypt logins per start).
    #[serde(default)]
    agency_session: Option<Credentials>,
    #[serde(default)]
    citizen_session: Option<Credentials>,
}

/// Runs the demo between the homeservers labelled `agency` and `citizen`.
pub async fn run_demo(stack: &Stack, agency: &str, citizen: &str) -> Result<DemoOutcome> {
    let started = Instant::now();
    let missing = |label: &str| {
        StackError::InvalidSpec(format!("the demo needs a homeserver labelled {label:?}"))
    };
    let agency = stack.homeserver(agency).ok_or_else(|| missing(agency))?;
    let citizen = stack.homeserver(citizen).ok_or_else(|| missing(citizen))?;
    let http = stack.http();
    let state_path = stack.state_dir().join("demo.json");
    let mut state = load_state(&state_path)?;

    let amt = session(
        agency,
        AGENCY_USER,
        &state.agency_password,
        state.agency_session.take(),
    )
    .await?;
    let erika = session(
        citizen,
        CITIZEN_USER,
        &state.citizen_password,
        state.citizen_session.take(),
    )
    .await?;
    state.agency_session = Some(amt.clone());
    state.citizen_session = Some(erika.clone());

    // Reuse the recorded room when the official is still in it.
    let mut room_created = false;
    let room_id = match &state.room_id {
        Some(room_id) if joined_rooms(http, agency, &amt).await?.contains(room_id) => {
            room_id.clone()
        }
        _ => {
            let body = json!({"preset": "private_chat", "name": "govmx demo: Bescheid", "topic": "agency ↔ citizen"});
            let created = call_json(
                "create room",
                authed(http.post(api(agency, &["createRoom"])), &amt).json(&body),
            )
            .await?;
            room_created = true;
            created["room_id"].as_str().unwrap_or_default().to_owned()
        }
    };
    state.room_id = Some(room_id.clone());
    save_state(&state_path, &state)?;

    if !joined_rooms(http, citizen, &erika)
        .await?
        .contains(&room_id)
    {
        let invite = json!({"user_id": erika.user_id});
        call_json(
            "invite erika",
            authed(http.post(api(agency, &["rooms", &room_id, "invite"])), &amt).json(&invite),
        )
        .await?;
        let mut join = api(citizen, &["join", &room_id]);
        join.query_pairs_mut()
            .append_pair("server_name", &agency.server_name());
        call_json(
            "join over federation",
            authed(http.post(join), &erika).json(&json!({})),
        )
        .await?;
    }

    // The citizen's sync position before the message, so only new events are awaited.
    let mut since = sync(http, citizen, &erika, None, 0).await?["next_batch"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let txn = random_hex(8);
    let body = json!({"msgtype": "m.text", "body": format!("Ihr Bescheid liegt vor ({txn})")});
    let sent_at = Instant::now();
    let sent = call_json(
        "send message",
        authed(
            http.put(api(
                agency,
                &["rooms", &room_id, "send", "m.room.message", &txn],
            )),
            &amt,
        )
        .json(&body),
    )
    .await?;
    let event_id = sent["event_id"].as_str().unwrap_or_default().to_owned();

    loop {
        let response = sync(http, citizen, &erika, Some(&since), 1000).await?;
        let events = &response["rooms"]["join"][&room_id]["timeline"]["events"];
        if events
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["event_id"] == event_id.as_str()))
        {
            break;
        }
        if sent_at.elapsed() > DELIVERY_DEADLINE {
            return Err(StackError::Timeout {
                what: format!("{event_id} in {}'s /sync", erika.user_id),
                after: DELIVERY_DEADLINE,
            });
        }
        since = response["next_batch"].as_str().unwrap_or(&since).to_owned();
    }
    let delivery = sent_at.elapsed();
    Ok(DemoOutcome {
        agency_login: (amt.user_id, state.agency_password),
        citizen_login: (erika.user_id, state.citizen_password),
        room_id,
        room_created,
        event_id,
        delivery,
        total: started.elapsed(),
    })
}

/// The stored session if it still works, else register (or log in) afresh.
async fn session(
    hs: &Homeserver,
    localpart: &str,
    password: &str,
    stored: Option<Credentials>,
) -> Result<Credentials> {
    if let Some(stored) = stored
        && stored.user_id == hs.user_id(localpart)
        && hs.is_valid(&stored).await
    {
        return Ok(stored);
    }
    hs.register_user(localpart, password).await
}

fn api(hs: &Homeserver, segments: &[&str]) -> reqwest::Url {
    let mut url = reqwest::Url::parse(&hs.client_url()).expect("client URLs are valid");
    url.path_segments_mut()
        .expect("http URLs have paths")
        .extend(["_matrix", "client", "v3"])
        .extend(segments);
    url
}

fn authed(request: reqwest::RequestBuilder, user: &Credentials) -> reqwest::RequestBuilder {
    request.bearer_auth(&user.access_token)
}

async fn joined_rooms(
    http: &reqwest::Client,
    hs: &Homeserver,
    user: &Credentials,
) -> Result<Vec<String>> {
    let value = call_json(
        "joined rooms",
        authed(http.get(api(hs, &["joined_rooms"])), user),
    )
    .await?;
    let rooms = value["joined_rooms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(rooms
        .iter()
        .filter_map(|room| room.as_str().map(str::to_owned))
        .collect())
}

async fn sync(
    http: &reqwest::Client,
    hs: &Homeserver,
    user: &Credentials,
    since: Option<&str>,
    timeout_ms: u64,
) -> Result<serde_json::Value> {
    let mut url = api(hs, &["sync"]);
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("timeout", &timeout_ms.to_string());
        query.append_pair(
            "filter",
            r#"{"presence":{"types":[]},"room":{"timeline":{"limit":20}}}"#,
        );
        if let Some(since) = since {
            query.append_pair("since", since);
        }
    }
    call_json(
        "sync",
        authed(http.get(url), user)
            .timeout(Duration::from_millis(timeout_ms) + Duration::from_secs(10)),
    )
    .await
}

fn load_state(path: &Path) -> Result<DemoState> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| StackError::CorruptState {
            path: path.to_owned(),
            detail: error.to_string(),
        }),
        Err(_) => Ok(DemoState {
            agency_password: random_hex(8),
            citizen_password: random_hex(8),
            room_id: None,
            agency_session: None,
            citizen_session: None,
        }),
    }
}

fn save_state(path: &Path, state: &DemoState) -> Result<()> {
    write_file(
        path,
        &serde_json::to_vec_pretty(state).expect("demo state serialises"),
        0o600,
    )
}
