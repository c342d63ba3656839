//! The Jira REST calls the action makes (API v2 and the agile API), on Cloud and Server/DC.
//! Each call names its step in errors; credentials never appear in them.

use reqwest::Method;
use serde_json::json;

use super::fields::{self, FieldMeta, IssueType};
use crate::action::ActionError;
use crate::action::api_client::{Remote, context, json_reply};
use crate::config::Secret;

/// Page size for createmeta; pages are followed up to [`MAX_PAGES`].
const PAGE: usize = 100;
const MAX_PAGES: usize = 20;

/// How requests authenticate.
pub enum Auth {
    /// `user` with a password (Server/DC) or an API token (Cloud).
    Basic { user: String, secret: Secret },
    /// A personal access token (Server/DC).
    Bearer(Secret),
}

pub struct JiraApi {
    /// The base URL without a trailing slash (it may carry a context path, `/jira`).
    pub base: String,
    pub cloud: bool,
    pub auth: Auth,
    pub remote: Remote,
}

/// What createmeta says about the project's create screen for the chosen issue type.
pub struct CreateMeta {
    pub issue_type: IssueType,
    pub fields: Vec<FieldMeta>,
}

impl JiraApi {
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, ActionError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base))
            .map_err(|err| ActionError::permanent(format!("bad Jira URL for {path}: {err}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    fn request(&self, method: Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        let request = self
            .remote
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json");
        match &self.auth {
            Auth::Basic { user, secret } => request.basic_auth(user, Some(secret.expose())),
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, ActionError> {
        request
            .send()
            .await
            .map_err(|err| context(ActionError::transport(err), what))
    }

    async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<serde_json::Value, ActionError> {
        let url = self.url(path, query)?;
        json_reply(self.send(self.request(Method::GET, url), what).await?, what).await
    }

    /// Like [`JiraApi::get`], but 404 is `None` (an endpoint this Jira does not have).
    async fn get_optional(
        &self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<Option<serde_json::Value>, ActionError> {
        let url = self.url(path, query)?;
        let response = self.send(self.request(Method::GET, url), what).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        json_reply(response, what).await.map(Some)
    }

    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        what: &str,
    ) -> Result<serde_json::Value, ActionError> {
        let url = self.url(path, &[])?;
        let request = self.request(Method::POST, url).json(body);
        json_reply(self.send(request, what).await?, what).await
    }

    /// The create screen of `project` for the wanted issue type: the paged createmeta endpoints
    /// (Cloud, Jira 8.4+ and 9+), falling back to the old `createmeta?expand=` (Jira before 9).
    pub async fn create_meta(
        &self,
        project: &str,
        wanted_type: Option<&str>,
    ) -> Result<CreateMeta, ActionError> {
        let what = "reading createmeta";
        let types_path = format!("/rest/api/2/issue/createmeta/{project}/issuetypes");
        let Some(first) = self
            .get_optional(&types_path, &[("maxResults", "100")], what)
            .await?
        else {
            return self.create_meta_legacy(project, wanted_type).await;
        };
        let types = fields::issue_types(&first);
        let issue_type = fields::choose_issue_type(&types, wanted_type)
            .map_err(|why| ActionError::permanent(format!("project {project}: {why}")))?
            .clone();
        let fields_path = format!("{types_path}/{}", issue_type.id);
        let mut fields = Vec::new();
        for page in 0..MAX_PAGES {
            let start = (page * PAGE).to_string();
            let max = PAGE.to_string();
            let reply = self
                .get(
                    &fields_path,
                    &[("startAt", &start), ("maxResults", &max)],
                    what,
                )
                .await?;
            let batch = fields::fields_of(&reply);
            let n = batch.len();
            fields.extend(batch);
            let total = reply.get("total").and_then(|t| t.as_u64());
            let last = reply.get("isLast").and_then(|l| l.as_bool());
            let done = last.unwrap_or(false)
                || n < PAGE
                || total.is_some_and(|t| fields.len() as u64 >= t);
            if done {
                break;
            }
        }
        Ok(CreateMeta { issue_type, fields })
    }

    async fn create_meta_legacy(
        &self,
        project: &str,
        wanted_type: Option<&str>,
    ) -> Result<CreateMeta, ActionError> {
        let reply = self
            .get(
                "/rest/api/2/issue/createmeta",
                &[
                    ("projectKeys", project),
                    ("expand", "projects.issuetypes.fields"),
                ],
                "reading createmeta",
            )
            .await?;
        let Some(project_meta) = reply
            .get("projects")
            .and_then(|p| p.as_array())
            .and_then(|p| p.first())
        else {
            return Err(ActionError::permanent(format!(
                "project {project} not found, or the user may not create issues in it"
            )));
        };
        let types = fields::issue_types(project_meta);
        let issue_type = fields::choose_issue_type(&types, wanted_type)
            .map_err(|why| ActionError::permanent(format!("project {project}: {why}")))?
            .clone();
        let fields = project_meta
            .get("issuetypes")
            .and_then(|t| t.as_array())
            .and_then(|t| {
                t.iter()
                    .find(|t| t.get("id").and_then(|i| i.as_str()) == Some(&issue_type.id))
            })
            .map(fields::fields_of)
            .unwrap_or_default();
        Ok(CreateMeta { issue_type, fields })
    }

    /// The key of the newest unresolved issue of `project` carrying `label`, if any.
    pub async fn find_open(
        &self,
        project: &str,
        label: &str,
    ) -> Result<Option<String>, ActionError> {
        let body = json!({
            "jql": search_jql(project, label),
            "maxResults": 1,
            "fields": ["summary"],
        });
        // Cloud retired POST /search for /search/jql; Server/DC only has /search.
        let path = if self.cloud {
            "/rest/api/2/search/jql"
        } else {
            "/rest/api/2/search"
        };
        let reply = self
            .post(path, &body, "searching for an open ticket")
            .await?;
        Ok(reply
            .get("issues")
            .and_then(|i| i.as_array())
            .and_then(|i| i.first())
            .and_then(|i| i.get("key"))
            .and_then(|k| k.as_str())
            .map(str::to_string))
    }

    pub async fn comment(&self, key: &str, body: &str) -> Result<(), ActionError> {
        self.post(
            &format!("/rest/api/2/issue/{key}/comment"),
            &json!({ "body": body }),
            &format!("commenting on {key}"),
        )
        .await
        .map(drop)
    }

    /// Creates the issue; returns its key.
    pub async fn create(&self, fields: serde_json::Value) -> Result<String, ActionError> {
        let reply = self
            .post(
                "/rest/api/2/issue",
                &json!({ "fields": fields }),
                "creating the issue",
            )
            .await?;
        Ok(reply
            .get("key")
            .and_then(|k| k.as_str())
            .unwrap_or("?")
            .to_string())
    }

    /// The assignee value for `who` (an email or user name): `{"accountId"}` on Cloud, `{"name"}`
    /// on Server/DC; `None` when the user search finds nobody.
    pub async fn user(&self, who: &str) -> Result<Option<serde_json::Value>, ActionError> {
        let param = if self.cloud { "query" } else { "username" };
        let reply = self
            .get(
                "/rest/api/2/user/search",
                &[(param, who)],
                "looking up the assignee",
            )
            .await?;
        let first = reply.as_array().and_then(|users| {
            users
                .iter()
                .find(|u| {
                    ["emailAddress", "name"].iter().any(|k| {
                        u.get(*k)
                            .and_then(|v| v.as_str())
                            .is_some_and(|v| v.eq_ignore_ascii_case(who))
                    })
                })
                .or_else(|| users.first())
        });
        Ok(first.and_then(|u| {
            if self.cloud {
                u.get("accountId")
                    .and_then(|a| a.as_str())
                    .map(|a| json!({ "accountId": a }))
            } else {
                u.get("name")
                    .and_then(|n| n.as_str())
                    .map(|n| json!({ "name": n }))
            }
        }))
    }

    /// The id of the sprint to put new issues in: on the project's board (named `board`, else
    /// the first scrum board), the sprint named `sprint`, else the active one.
    pub async fn sprint_id(
        &self,
        project: &str,
        board: Option<&str>,
        sprint: Option<&str>,
    ) -> Result<Option<u64>, ActionError> {
        let mut query = vec![("projectKeyOrId", project)];
        if let Some(board) = board {
            query.push(("name", board));
        }
        let boards = self
            .get("/rest/agile/1.0/board", &query, "looking up the board")
            .await?;
        let boards = boards.get("values").and_then(|v| v.as_array());
        let name_of =
            |v: &serde_json::Value| v.get("name").and_then(|n| n.as_str()).map(str::to_string);
        let chosen = boards.and_then(|boards| match board {
            Some(board) => boards
                .iter()
                .find(|b| name_of(b).is_some_and(|n| n.eq_ignore_ascii_case(board))),
            None => boards
                .iter()
                .find(|b| b.get("type").and_then(|t| t.as_str()) == Some("scrum"))
                .or_else(|| boards.first()),
        });
        let Some(board_id) = chosen.and_then(|b| b.get("id")).and_then(|i| i.as_u64()) else {
            return Ok(None);
        };
        let sprints = self
            .get(
                &format!("/rest/agile/1.0/board/{board_id}/sprint"),
                &[("state", "active,future")],
                "looking up the sprint",
            )
            .await?;
        let sprints = sprints.get("values").and_then(|v| v.as_array());
        let found = sprints.and_then(|sprints| match sprint {
            Some(sprint) => sprints
                .iter()
                .find(|s| name_of(s).is_some_and(|n| n.eq_ignore_ascii_case(sprint))),
            None => sprints
                .iter()
                .find(|s| s.get("state").and_then(|t| t.as_str()) == Some("active")),
        });
        Ok(found.and_then(|s| s.get("id")).and_then(|i| i.as_u64()))
    }
}

/// The search for an open ticket of one finding.
pub fn search_jql(project: &str, label: &str) -> String {
    format!(
        "project = {} AND labels = {} AND statusCategory != Done ORDER BY created DESC",
        fields::jql_quote(project),
        fields::jql_quote(label)
    )
}
