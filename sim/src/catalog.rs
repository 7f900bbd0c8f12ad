//! The fixed catalog of regions, sizes, images and SSH keys: small but
//! realistic, what create requests are validated against and what the list
//! endpoints serve.

use serde_json::{Value, json};

pub(crate) struct Region {
    pub(crate) slug: &'static str,
    name: &'static str,
    /// The account's default VPC there, for droplets created without vpc_uuid.
    pub(crate) default_vpc_uuid: &'static str,
}

pub(crate) struct Size {
    pub(crate) slug: &'static str,
    pub(crate) memory: u32,
    pub(crate) vcpus: u32,
    pub(crate) disk: u32,
    transfer: f64,
    price_monthly: f64,
    price_hourly: f64,
}

pub(crate) struct Image {
    pub(crate) id: u64,
    /// Empty for a snapshot.
    pub(crate) slug: &'static str,
    name: &'static str,
    distribution: &'static str,
    created_at: &'static str,
    min_disk_size: u32,
    size_gigabytes: f64,
}

pub(crate) struct SshKey {
    pub(crate) id: u64,
    pub(crate) fingerprint: &'static str,
    name: &'static str,
    public_key: &'static str,
}

pub(crate) const REGIONS: &[Region] = &[
    Region::new("nyc1", "New York 1", "0f1b2c3d-1a2b-4c5d-8e9f-0a1b2c3d4e01"),
    Region::new("nyc3", "New York 3", "0f1b2c3d-1a2b-4c5d-8e9f-0a1b2c3d4e03"),
    Region::new(
        "sfo3",
        "San Francisco 3",
        "0f1b2c3d-1a2b-4c5d-8e9f-0a1b2c3d4e13",
    ),
    Region::new(
        "ams3",
        "Amsterdam 3",
        "0f1b2c3d-1a2b-4c5d-8e9f-0a1b2c3d4e23",
    ),
    Region::new("lon1", "London 1", "0f1b2c3d-1a2b-4c5d-8e9f-0a1b2c3d4e31"),
    Region::new(
        "fra1",
        "Frankfurt 1",
        "0f1b2c3d-1a2b-4c5d-8e9f-0a1b2c3d4e41",
    ),
    Region::new(
        "sgp1",
        "Singapore 1",
        "0f1b2c3d-1a2b-4c5d-8e9f-0a1b2c3d4e51",
    ),
    Region::new("tor1", "Toronto 1", "0f1b2c3d-1a2b-4c5d-8e9f-0a1b2c3d4e61"),
];

pub(crate) const SIZES: &[Size] = &[
    Size::new("s-1vcpu-512mb-10gb", 512, 1, 10, 0.5, 4.0, 0.00595),
    Size::new("s-1vcpu-1gb", 1024, 1, 25, 1.0, 6.0, 0.00893),
    Size::new("s-1vcpu-2gb", 2048, 1, 50, 2.0, 12.0, 0.01786),
    Size::new("s-2vcpu-2gb", 2048, 2, 60, 3.0, 18.0, 0.02679),
    Size::new("s-2vcpu-4gb", 4096, 2, 80, 4.0, 24.0, 0.03571),
    // The legacy slugs the original DOProxy tutorial used.
    Size::new("512mb", 512, 1, 20, 1.0, 5.0, 0.00744),
    Size::new("1gb", 1024, 1, 30, 2.0, 10.0, 0.01488),
    Size::new("2gb", 2048, 2, 40, 3.0, 20.0, 0.02976),
];

pub(crate) const IMAGES: &[Image] = &[
    Image {
        id: 158_244_651,
        slug: "ubuntu-24-04-x64",
        name: "24.04 (LTS) x64",
        distribution: "Ubuntu",
        created_at: "2024-05-31T14:40:31Z",
        min_disk_size: 7,
        size_gigabytes: 2.62,
    },
    Image {
        id: 129_211_873,
        slug: "ubuntu-22-04-x64",
        name: "22.04 (LTS) x64",
        distribution: "Ubuntu",
        created_at: "2023-03-23T20:36:34Z",
        min_disk_size: 7,
        size_gigabytes: 2.28,
    },
    Image {
        id: 6_918_990,
        slug: "ubuntu-14-04-x64",
        name: "14.04 x64",
        distribution: "Ubuntu",
        created_at: "2014-10-17T20:24:33Z",
        min_disk_size: 20,
        size_gigabytes: 2.34,
    },
    Image {
        id: 146_862_385,
        slug: "debian-12-x64",
        name: "12 x64",
        distribution: "Debian",
        created_at: "2023-12-12T19:12:38Z",
        min_disk_size: 7,
        size_gigabytes: 0.98,
    },
];

pub(crate) const SSH_KEYS: &[SshKey] = &[
    SshKey {
        id: 163_420,
        fingerprint: "3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa",
        name: "doproxy admin",
        public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNpbXVsYXRlZCBkb3Byb3h5IGFkbWluIGtleQ admin@doproxy",
    },
    SshKey {
        id: 512_190,
        fingerprint: "9c:3e:71:0a:5d:42:b8:16:e2:7f:c4:09:d1:6b:a3:58",
        name: "ci",
        public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNpbXVsYXRlZCBkb3Byb3h5IGNpIGtleSBoZXJl ci@doproxy",
    },
];

/// A region by slug, or by slug prefix ("nyc") as the API allows.
pub(crate) fn region(slug: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.slug == slug).or_else(|| {
        REGIONS
            .iter()
            .find(|r| !slug.is_empty() && r.slug.starts_with(slug))
    })
}

pub(crate) fn size(slug: &str) -> Option<&'static Size> {
    SIZES.iter().find(|s| s.slug == slug)
}

/// Public images can be named by numeric id or by slug.
pub(crate) fn image_by_slug_or_id(key: &str) -> Option<&'static Image> {
    IMAGES
        .iter()
        .find(|i| i.slug == key || key.parse() == Ok(i.id))
}

/// A public image by slug or id, else one of the account's `snapshots` by id.
pub(crate) fn image_in(key: &str, snapshots: &[&'static Image]) -> Option<&'static Image> {
    image_by_slug_or_id(key).or_else(|| snapshots.iter().copied().find(|i| key.parse() == Ok(i.id)))
}

/// Keys can be named by numeric id or by fingerprint.
pub(crate) fn ssh_key(key: &str) -> Option<&'static SshKey> {
    SSH_KEYS
        .iter()
        .find(|k| k.fingerprint == key || key.parse() == Ok(k.id))
}

fn region_slugs() -> Vec<&'static str> {
    REGIONS.iter().map(|r| r.slug).collect()
}

impl Region {
    const fn new(slug: &'static str, name: &'static str, default_vpc_uuid: &'static str) -> Region {
        Region {
            slug,
            name,
            default_vpc_uuid,
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "name": self.name,
            "slug": self.slug,
            "features": ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"],
            "available": true,
            "sizes": SIZES.iter().map(|s| s.slug).collect::<Vec<_>>(),
        })
    }
}

impl Size {
    const fn new(
        slug: &'static str,
        memory: u32,
        vcpus: u32,
        disk: u32,
        transfer: f64,
        price_monthly: f64,
        price_hourly: f64,
    ) -> Size {
        Size {
            slug,
            memory,
            vcpus,
            disk,
            transfer,
            price_monthly,
            price_hourly,
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "slug": self.slug,
            "memory": self.memory,
            "vcpus": self.vcpus,
            "disk": self.disk,
            "transfer": self.transfer,
            "price_monthly": self.price_monthly,
            "price_hourly": self.price_hourly,
            "regions": region_slugs(),
            "available": true,
            "description": "Basic",
            "disk_info": [{"type": "local", "size": {"amount": self.disk, "unit": "gib"}}],
        })
    }
}

impl Image {
    /// A snapshot of the account, as building a new version makes one. It
    /// lives as long as the process: the simulator hands out `&'static`
    /// images, and a test makes only a few.
    pub(crate) fn snapshot(id: u64, name: &str, created_at: String) -> &'static Image {
        Box::leak(Box::new(Image {
            id,
            slug: "",
            name: Box::leak(name.to_owned().into_boxed_str()),
            distribution: "Ubuntu",
            created_at: Box::leak(created_at.into_boxed_str()),
            min_disk_size: 25,
            size_gigabytes: 2.4,
        }))
    }

    pub(crate) fn is_snapshot(&self) -> bool {
        self.slug.is_empty()
    }

    pub(crate) fn json(&self) -> Value {
        let slug = (!self.is_snapshot()).then_some(self.slug);
        json!({
            "id": self.id,
            "name": self.name,
            "distribution": self.distribution,
            "slug": slug,
            "public": !self.is_snapshot(),
            "regions": region_slugs(),
            "created_at": self.created_at,
            // DigitalOcean's own distribution images have type "snapshot".
            "type": "snapshot",
            "min_disk_size": self.min_disk_size,
            "size_gigabytes": self.size_gigabytes,
            "description": format!("{} {}", self.distribution, self.name),
            "tags": [],
            "status": "available",
            "error_message": "",
        })
    }
}

impl SshKey {
    pub(crate) fn json(&self) -> Value {
        json!({
            "id": self.id,
            "fingerprint": self.fingerprint,
            "public_key": self.public_key,
            "name": self.name,
        })
    }
}
