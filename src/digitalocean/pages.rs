//! Lists of droplets, a page of 200 at a time: the pages after the first
//! are asked for at once, so a pool of 1,000 (five pages) costs one round
//! trip after the first instead of four more.

use reqwest::Method;

use super::client::{Client, ManyDroplets, PER_PAGE, parse};
use super::droplet::Droplet;
use super::error::ApiError;

/// The most pages asked for at once after the first: the count comes from
/// the API's answer, so it never decides alone how many requests are in
/// flight; pages beyond these follow one after another.
const PAGES_AT_ONCE: usize = 8;

/// The requests one list of `count` droplets takes: one per page.
pub fn list_requests(count: usize) -> usize {
    count.div_ceil(PER_PAGE as usize).max(1)
}

impl Client {
    /// Every droplet carrying `tag`, one request per 200 droplets. The
    /// pages after the first are asked for at once (the first tells how
    /// many there are): a pool of 1,000 is five pages, which one after
    /// another would cost five round trips.
    pub async fn list_droplets(&self, tag: &str) -> Result<Vec<Droplet>, ApiError> {
        let first = self.list_page(tag, 1).await?;
        let mut all = first.droplets;
        let mut next = first.links.pages.next.is_some();
        let mut page = 1;
        if next && let Some(total) = first.meta.and_then(|meta| meta.total) {
            let mut pages = tokio::task::JoinSet::new();
            for number in 2..=list_requests(total).min(1 + PAGES_AT_ONCE) {
                let (client, tag) = (self.clone(), tag.to_string());
                pages.spawn(async move { (number, client.list_page(&tag, number).await) });
            }
            let mut listed = Vec::new();
            while let Some(joined) = pages.join_next().await {
                let (number, outcome) = joined.expect("a list task panicked");
                listed.push((number, outcome?));
            }
            listed.sort_by_key(|(number, _)| *number);
            for (number, droplets) in listed {
                (page, next) = (number, droplets.links.pages.next.is_some());
                all.extend(droplets.droplets);
            }
        }
        // Pages beyond those asked for at once, or beyond the count the
        // first gave (the pool grew meanwhile), or all of them when it gave
        // none.
        while next {
            page += 1;
            let listed = self.list_page(tag, page).await?;
            next = listed.links.pages.next.is_some();
            all.extend(listed.droplets);
        }
        Ok(all)
    }

    /// Page `page` of the droplets carrying `tag`.
    async fn list_page(&self, tag: &str, page: usize) -> Result<ManyDroplets, ApiError> {
        let query = [
            ("tag_name", tag.to_string()),
            ("per_page", PER_PAGE.to_string()),
            ("page", page.to_string()),
        ];
        self.with_retries("/v2/droplets", || async {
            let body = self.send(Method::GET, "/v2/droplets", &query, None).await?;
            parse::<ManyDroplets>(&body)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_takes_a_request_per_page() {
        assert_eq!(list_requests(0), 1, "an empty list is one request too");
        assert_eq!(list_requests(200), 1);
        assert_eq!(list_requests(1000), 5);
        assert_eq!(list_requests(1001), 6);
    }
}
