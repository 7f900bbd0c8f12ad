//! Droplet shapes, as the OpenAPI spec defines them: the create request body
//! and the parts of the droplet object doproxy reads.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::values::{Image, SshKey};

/// Body of POST /v2/droplets (`droplet_single_create` or
/// `droplet_multi_create`). Unset optional fields are left out, never sent as
/// null: the API rejects null where it expects a string.
#[derive(Debug, Serialize)]
pub struct CreateRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<&'a [String]>,
    pub region: &'a str,
    pub size: &'a str,
    pub image: &'a Image,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub ssh_keys: &'a [SshKey],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<&'a str>,
    pub tags: &'a [String],
    /// The DigitalOcean agent, so droplet CPU shows in Monitoring.
    pub monitoring: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_uuid: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backups: bool,
    /// The agent behind the control panel's web console; unset leaves
    /// DigitalOcean's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_droplet_agent: Option<bool>,
}

impl<'a> CreateRequest<'a> {
    /// The names this request creates, whichever form it uses.
    pub fn droplet_names(&self) -> Vec<&'a str> {
        match (self.name, self.names) {
            (Some(name), _) => vec![name],
            (None, Some(names)) => names.iter().map(String::as_str).collect(),
            (None, None) => Vec::new(),
        }
    }
}

/// The fields of the API's droplet object that doproxy uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Droplet {
    pub id: u64,
    pub name: String,
    pub status: String,
    pub created_at: String,
    #[serde(default)]
    pub networks: Networks,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Networks {
    #[serde(default)]
    pub v4: Vec<NetworkV4>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NetworkV4 {
    pub ip_address: Ipv4Addr,
    #[serde(rename = "type")]
    pub kind: String,
}

impl Droplet {
    pub fn private_ipv4(&self) -> Option<Ipv4Addr> {
        self.ipv4("private")
    }

    pub fn public_ipv4(&self) -> Option<Ipv4Addr> {
        self.ipv4("public")
    }

    fn ipv4(&self, kind: &str) -> Option<Ipv4Addr> {
        self.networks
            .v4
            .iter()
            .find(|n| n.kind == kind)
            .map(|n| n.ip_address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_leaves_unset_fields_out() {
        let tags = vec!["doproxy".to_string()];
        let image = Image::Slug("ubuntu-24-04-x64".into());
        let request = CreateRequest {
            name: Some("web-0"),
            names: None,
            region: "nyc3",
            size: "s-1vcpu-1gb",
            image: &image,
            ssh_keys: &[],
            user_data: None,
            tags: &tags,
            monitoring: true,
            vpc_uuid: None,
            ipv6: false,
            backups: false,
            with_droplet_agent: None,
        };
        let body = serde_json::to_value(&request).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"name": "web-0", "region": "nyc3", "size": "s-1vcpu-1gb",
                "image": "ubuntu-24-04-x64", "tags": ["doproxy"], "monitoring": true})
        );
        assert_eq!(request.droplet_names(), vec!["web-0"]);
        let full = CreateRequest {
            vpc_uuid: Some("760e09ef-dc84-11e8-981e-3cfdfeaae000"),
            ipv6: true,
            backups: true,
            monitoring: false,
            with_droplet_agent: Some(false),
            ..request
        };
        let body = serde_json::to_value(&full).unwrap();
        assert_eq!(body["vpc_uuid"], "760e09ef-dc84-11e8-981e-3cfdfeaae000");
        assert_eq!(
            (&body["ipv6"], &body["backups"], &body["monitoring"]),
            (&true.into(), &true.into(), &false.into())
        );
        assert_eq!(body["with_droplet_agent"], false);
    }

    #[test]
    fn droplet_addresses_come_from_networks() {
        let droplet: Droplet = serde_json::from_value(serde_json::json!({
            "id": 7, "name": "web-0", "status": "active", "created_at": "2020-07-21T18:37:44Z",
            "networks": {"v4": [
                {"ip_address": "10.0.0.5", "netmask": "255.255.0.0", "gateway": null, "type": "private"},
                {"ip_address": "203.0.113.5", "netmask": "255.255.255.0", "gateway": "203.0.113.1", "type": "public"}
            ], "v6": []},
            "tags": ["doproxy"]
        }))
        .unwrap();
        assert_eq!(droplet.private_ipv4(), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(droplet.public_ipv4(), Some(Ipv4Addr::new(203, 0, 113, 5)));
    }
}
