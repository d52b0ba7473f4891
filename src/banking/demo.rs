//! The demo bank: deterministic sample customers, so binding, queries and transfers can
//! be tried in the first minute of `kefu chat`, and tested without a bank.
//!
//! | customer | card (debit) | card (credit) | phone on file |
//! |---|---|---|---|
//! | 张伟 | 6222 0200 1234 2345 | 6225 8800 1234 6688 | 138****5678 |
//! | 李娜 | 6217 0000 1234 8888 | — | 139****1111 |
//!
//! Every code is [`DEMO_CODE`] (`123456`); codes expire after five minutes.
//!
//! The static facts (customers, payees, branches, the transaction pattern) live in code;
//! what changes (balances, executed transfers and repayments, idempotency records, code
//! challenges, ticket counters) lives in its own sled tree of the engine's store, so a
//! transfer changes the demo balance durably. The card numbers are never written to that
//! tree: a challenge records the customer id and the last four digits only.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::{Date, Duration, OffsetDateTime, UtcOffset};

use super::*;

/// The SMS code the demo bank "sends" every time.
pub const DEMO_CODE: &str = "123456";
const CODE_TTL_SECS: i64 = 300;
/// 单日转账限额 5 万元.
const DAILY_TRANSFER_LIMIT: u64 = 5_000_000;

struct Card {
    number: &'static str,
    account: &'static str,
    kind: AccountKind,
    name: &'static str,
    /// Opening balance in fen (debit) or credit line (credit).
    opening: i64,
}

struct Customer {
    id: &'static str,
    phone_masked: &'static str,
    cards: &'static [Card],
    payees: &'static [(&'static str, &'static str, &'static str, &'static str)],
}

const CUSTOMERS: &[Customer] = &[
    Customer {
        id: "C001",
        phone_masked: "138****5678",
        cards: &[
            Card {
                number: "6222020012342345",
                account: "A001",
                kind: AccountKind::Debit,
                name: "借记卡",
                opening: 5_234_567,
            },
            Card {
                number: "6225880012346688",
                account: "A002",
                kind: AccountKind::Credit,
                name: "信用卡",
                opening: 5_000_000,
            },
        ],
        payees: &[
            ("P001", "王芳", "4321", "本行"),
            ("P002", "刘洋", "5566", "中国农业银行"),
        ],
    },
    Customer {
        id: "C002",
        phone_masked: "139****1111",
        cards: &[Card {
            number: "6217000012348888",
            account: "A101",
            kind: AccountKind::Debit,
            name: "借记卡",
            opening: 120_000,
        }],
        payees: &[("P101", "张伟", "2345", "本行")],
    },
];

struct BranchInfo {
    id: &'static str,
    name: &'static str,
    city: &'static str,
    district: &'static str,
    address: &'static str,
    lat: f64,
    lon: f64,
    /// Local opening and closing hour.
    open: u8,
    close: u8,
}

const BRANCHES: &[BranchInfo] = &[
    BranchInfo {
        id: "B01",
        name: "杭州西湖支行",
        city: "杭州",
        district: "西湖",
        address: "杭州市西湖区文三路100号",
        lat: 30.2800,
        lon: 120.1300,
        open: 9,
        close: 17,
    },
    BranchInfo {
        id: "B02",
        name: "杭州滨江支行",
        city: "杭州",
        district: "滨江",
        address: "杭州市滨江区江南大道500号",
        lat: 30.2100,
        lon: 120.2100,
        open: 9,
        close: 17,
    },
    BranchInfo {
        id: "B03",
        name: "杭州上城营业部",
        city: "杭州",
        district: "上城",
        address: "杭州市上城区解放路88号",
        lat: 30.2450,
        lon: 120.1700,
        open: 8,
        close: 18,
    },
    BranchInfo {
        id: "B04",
        name: "北京朝阳支行",
        city: "北京",
        district: "朝阳",
        address: "北京市朝阳区建国路66号",
        lat: 39.9080,
        lon: 116.4600,
        open: 9,
        close: 17,
    },
    BranchInfo {
        id: "B05",
        name: "北京海淀支行",
        city: "北京",
        district: "海淀",
        address: "北京市海淀区中关村大街20号",
        lat: 39.9800,
        lon: 116.3100,
        open: 9,
        close: 17,
    },
    BranchInfo {
        id: "B06",
        name: "上海浦东支行",
        city: "上海",
        district: "浦东",
        address: "上海市浦东新区世纪大道1号",
        lat: 31.2350,
        lon: 121.5050,
        open: 9,
        close: 17,
    },
];

/// The seeded history of a debit account: (days ago, signed fen, description). Dates are
/// relative to the day of the query, so "最近7天" always finds something.
fn seeded_history(account: &str) -> Vec<(i64, i64, String)> {
    const SHOPS: [&str; 8] = [
        "美团外卖",
        "国家电网 电费",
        "滴滴出行",
        "超市购物",
        "中国移动 话费",
        "京东商城",
        "ATM取款",
        "星巴克",
    ];
    let seed: u64 = account.bytes().map(u64::from).sum();
    let mut out = Vec::new();
    for i in 0..26i64 {
        let days_ago = i * 2;
        if i % 10 == 3 {
            out.push((days_ago, 1_250_000, "工资 杭州某某科技有限公司".to_owned()));
            continue;
        }
        let k = (seed + i as u64 * 7) % SHOPS.len() as u64;
        let fen = 1_000 + ((seed * 31 + i as u64 * 977) % 40_000) as i64;
        out.push((days_ago, -fen, format!("消费 {}", SHOPS[k as usize])));
    }
    out
}

fn customer(id: &str) -> BankResult<&'static Customer> {
    CUSTOMERS
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(|| BankingError::not_found("customer"))
}

fn card(customer: &str, account: &str) -> BankResult<&'static Card> {
    super::demo::customer(customer)?
        .cards
        .iter()
        .find(|c| c.account == account)
        .ok_or_else(|| BankingError::not_found("account"))
}

fn local_date(now: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(now)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(UtcOffset::from_hms(8, 0, 0).unwrap_or(UtcOffset::UTC))
        .date()
}

fn local_hour(now: i64) -> u8 {
    OffsetDateTime::from_unix_timestamp(now)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(UtcOffset::from_hms(8, 0, 0).unwrap_or(UtcOffset::UTC))
        .hour()
}

fn ymd(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// What the demo bank remembers, in its sled tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Challenge {
    customer: String,
    card_tail: String,
    expires_at: i64,
    used: bool,
}

/// A transfer or repayment the demo bank executed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Posted {
    at: i64,
    account: String,
    /// Signed fen on `account`.
    amount: i64,
    description: String,
    /// Counts toward the daily transfer limit.
    transfer: bool,
    /// For repayments: the card account and statement month repaid.
    #[serde(default)]
    repaid: Option<(String, String)>,
}

pub struct DemoBank {
    db: sled::Db,
    tree: sled::Tree,
    /// Serializes money movement: check-then-debit must not interleave.
    money: Mutex<()>,
}

impl std::fmt::Debug for DemoBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoBank").finish()
    }
}

fn store_err(e: impl std::fmt::Display) -> BankingError {
    BankingError::unavailable(format!("demo bank store: {e}"))
}

impl DemoBank {
    /// The demo bank in its own tree of the engine's store.
    pub fn open(db: &sled::Db) -> crate::Result<Self> {
        Ok(DemoBank {
            tree: db.open_tree("demo_bank")?,
            db: db.clone(),
            money: Mutex::new(()),
        })
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> BankResult<Option<T>> {
        match self.tree.get(key).map_err(store_err)? {
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(store_err),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, key: &str, value: &T) -> BankResult<()> {
        let v = serde_json::to_vec(value).map_err(store_err)?;
        self.tree.insert(key, v).map_err(store_err)?;
        Ok(())
    }

    fn posted(&self) -> BankResult<Vec<Posted>> {
        self.tree
            .scan_prefix("posted/")
            .map(|kv| {
                let (_, v) = kv.map_err(store_err)?;
                serde_json::from_slice(&v).map_err(store_err)
            })
            .collect()
    }

    fn post(&self, p: &Posted) -> BankResult<()> {
        let id = self.db.generate_id().map_err(store_err)?;
        self.put(&format!("posted/{id:020}"), p)
    }

    fn challenge(&self, customer: &Customer, tail: &str, now: i64) -> BankResult<CodeChallenge> {
        let id = format!("ch-{}", self.db.generate_id().map_err(store_err)? + 1_000);
        let expires_at = now + CODE_TTL_SECS;
        self.put(
            &format!("challenge/{id}"),
            &Challenge {
                customer: customer.id.to_owned(),
                card_tail: tail.to_owned(),
                expires_at,
                used: false,
            },
        )?;
        self.tree.flush().map_err(store_err)?;
        Ok(CodeChallenge {
            challenge: id,
            phone_masked: customer.phone_masked.to_owned(),
            card_tail: tail.to_owned(),
            expires_at,
        })
    }

    /// Debit balance now: opening, plus the seeded history inside no window (the opening
    /// balance already includes it), plus everything posted.
    fn available(&self, account: &str, opening: i64) -> BankResult<i64> {
        Ok(opening
            + self
                .posted()?
                .iter()
                .filter(|p| p.account == account)
                .map(|p| p.amount)
                .sum::<i64>())
    }

    /// Executes once per idempotency key: a replay returns the first receipt unchanged.
    fn once(&self, key: &str, run: impl FnOnce() -> BankResult<Receipt>) -> BankResult<Receipt> {
        let _money = self.money.lock().unwrap_or_else(|p| p.into_inner());
        let k = format!("idem/{key}");
        if let Some(done) = self.get::<Receipt>(&k)? {
            return Ok(done);
        }
        let receipt = run()?;
        self.put(&k, &receipt)?;
        self.tree.flush().map_err(store_err)?;
        Ok(receipt)
    }

    fn statement(card: &Card, month: &str) -> BankResult<(i64, i64, String)> {
        let (y, m) = month
            .split_once('-')
            .and_then(|(y, m)| Some((y.parse::<i32>().ok()?, m.parse::<u8>().ok()?)))
            .filter(|(_, m)| (1..=12).contains(m))
            .ok_or_else(|| BankingError::not_found("statement month"))?;
        let seed = (y as i64 * 12 + m as i64) * 7919 + card.opening % 97;
        let balance = 80_000 + seed % 600_000;
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Ok((balance, balance / 10, format!("{ny:04}-{nm:02}-25")))
    }
}

impl BankingBackend for DemoBank {
    fn start_binding(&self, card_number: &str, now: i64) -> BankResult<CodeChallenge> {
        for c in CUSTOMERS {
            if let Some(card) = c.cards.iter().find(|k| k.number == card_number) {
                return self.challenge(c, &card.number[card.number.len() - 4..], now);
            }
        }
        Err(BankingError::not_found("card"))
    }

    fn send_code(&self, customer: &str, _: CodePurpose, now: i64) -> BankResult<CodeChallenge> {
        let c = super::demo::customer(customer)?;
        let tail = c
            .cards
            .first()
            .map_or("", |k| &k.number[k.number.len() - 4..]);
        self.challenge(c, tail, now)
    }

    fn check_code(&self, challenge: &str, code: &str, now: i64) -> BankResult<CodeCheck> {
        let key = format!("challenge/{challenge}");
        let Some(mut ch) = self.get::<Challenge>(&key)? else {
            return Err(BankingError::not_found("code"));
        };
        if now > ch.expires_at {
            return Ok(CodeCheck::Expired);
        }
        if code != DEMO_CODE {
            // Once the right code was given, the challenge takes no more guesses.
            return Ok(if ch.used {
                CodeCheck::Expired
            } else {
                CodeCheck::Wrong
            });
        }
        // Checking the right code again is idempotent: a challenge stands for one
        // binding or one confirmed payment, and a turn lost after the check (the engine
        // crashed before its commit) must pass again when the channel retries it.
        if !ch.used {
            ch.used = true;
            self.put(&key, &ch)?;
        }
        Ok(CodeCheck::Valid {
            customer: ch.customer,
        })
    }

    fn accounts(&self, customer: &str) -> BankResult<Vec<Account>> {
        Ok(super::demo::customer(customer)?
            .cards
            .iter()
            .map(|c| Account {
                id: c.account.to_owned(),
                kind: c.kind,
                tail: c.number[c.number.len() - 4..].to_owned(),
                name: c.name.to_owned(),
            })
            .collect())
    }

    fn balance(&self, customer: &str, account: &str) -> BankResult<Balance> {
        let c = card(customer, account)?;
        let available = self.available(account, c.opening)?;
        Ok(Balance {
            available,
            ledger: available,
        })
    }

    fn transactions(
        &self,
        customer: &str,
        account: &str,
        q: &TransactionQuery,
    ) -> BankResult<TransactionPage> {
        card(customer, account)?;
        let today = local_date(q.now);
        let mut all: Vec<Transaction> = self
            .posted()?
            .into_iter()
            .filter(|p| p.account == account)
            .map(|p| Transaction {
                date: ymd(local_date(p.at)),
                amount: p.amount,
                description: p.description,
            })
            .collect();
        all.reverse();
        all.extend(
            seeded_history(account)
                .into_iter()
                .map(|(ago, amount, description)| Transaction {
                    date: ymd(today - Duration::days(ago)),
                    amount,
                    description,
                }),
        );
        // Newest first; ISO dates compare as strings.
        all.sort_by(|a, b| b.date.cmp(&a.date));
        let in_range: Vec<Transaction> = all
            .into_iter()
            .filter(|t| t.date.as_str() >= q.from.as_str() && t.date.as_str() <= q.to.as_str())
            .collect();
        let size = q.page_size.max(1) as usize;
        let start = (q.page.max(1) as usize - 1).saturating_mul(size);
        Ok(TransactionPage {
            items: in_range.iter().skip(start).take(size).cloned().collect(),
            page: q.page.max(1),
            total: in_range.len() as u32,
        })
    }

    fn card_bill(&self, customer: &str, account: &str, month: &str) -> BankResult<Bill> {
        let c = card(customer, account)?;
        if c.kind != AccountKind::Credit {
            return Err(BankingError::not_found("credit card"));
        }
        let (statement_balance, minimum, due_date) = DemoBank::statement(c, month)?;
        let repaid: i64 = self
            .posted()?
            .iter()
            .filter(|p| {
                p.repaid
                    .as_ref()
                    .is_some_and(|(a, m)| a == account && m == month)
            })
            .map(|p| -p.amount)
            .sum();
        Ok(Bill {
            month: month.to_owned(),
            statement_balance,
            minimum,
            outstanding: (statement_balance - repaid).max(0),
            due_date,
        })
    }

    fn limits(&self, customer: &str, now: i64) -> BankResult<Limits> {
        let c = super::demo::customer(customer)?;
        let today = local_date(now);
        let used_today = self
            .posted()?
            .iter()
            .filter(|p| p.transfer && local_date(p.at) == today)
            .filter(|p| c.cards.iter().any(|k| k.account == p.account))
            .map(|p| p.amount.unsigned_abs())
            .sum();
        Ok(Limits {
            daily_transfer: DAILY_TRANSFER_LIMIT,
            used_today,
        })
    }

    fn payees(&self, customer: &str) -> BankResult<Vec<Payee>> {
        Ok(super::demo::customer(customer)?
            .payees
            .iter()
            .map(|(id, name, tail, bank)| Payee {
                id: (*id).to_owned(),
                name: (*name).to_owned(),
                tail: (*tail).to_owned(),
                bank: (*bank).to_owned(),
            })
            .collect())
    }

    fn repay(&self, r: &RepayRequest) -> BankResult<Receipt> {
        let from = card(&r.customer, &r.from_account)?;
        let to = card(&r.customer, &r.card_account)?;
        if to.kind != AccountKind::Credit {
            return Err(BankingError::not_found("credit card"));
        }
        self.once(&r.idempotency_key, || {
            let available = self.available(&r.from_account, from.opening)?;
            let amount = i64::try_from(r.amount).unwrap_or(i64::MAX);
            if amount > available {
                return Err(BankingError::InsufficientFunds { available });
            }
            let today = local_date(r.now);
            let first = today.replace_day(1).unwrap_or(today);
            let prev = first.previous_day().unwrap_or(first);
            let month = format!("{:04}-{:02}", prev.year(), u8::from(prev.month()));
            self.post(&Posted {
                at: r.now,
                account: r.from_account.clone(),
                amount: -amount,
                description: format!("信用卡还款 尾号{}", &to.number[to.number.len() - 4..]),
                transfer: false,
                repaid: Some((r.card_account.clone(), month)),
            })?;
            Ok(Receipt {
                reference: format!("R{}", &r.idempotency_key[..12.min(r.idempotency_key.len())]),
                amount: r.amount,
                balance_after: Some(available - amount),
            })
        })
    }

    fn transfer(&self, r: &TransferRequest) -> BankResult<Receipt> {
        let from = card(&r.customer, &r.from_account)?;
        let payee = self
            .payees(&r.customer)?
            .into_iter()
            .find(|p| p.id == r.payee)
            .ok_or_else(|| BankingError::not_found("payee"))?;
        self.once(&r.idempotency_key, || {
            let limits = self.limits(&r.customer, r.now)?;
            if r.amount > limits.remaining() {
                return Err(BankingError::OverLimit {
                    limit: limits.daily_transfer,
                    remaining: limits.remaining(),
                });
            }
            let available = self.available(&r.from_account, from.opening)?;
            let amount = i64::try_from(r.amount).unwrap_or(i64::MAX);
            if amount > available {
                return Err(BankingError::InsufficientFunds { available });
            }
            self.post(&Posted {
                at: r.now,
                account: r.from_account.clone(),
                amount: -amount,
                description: format!("转账 {} 尾号{}", payee.name, payee.tail),
                transfer: true,
                repaid: None,
            })?;
            Ok(Receipt {
                reference: format!("T{}", &r.idempotency_key[..12.min(r.idempotency_key.len())]),
                amount: r.amount,
                balance_after: Some(available - amount),
            })
        })
    }

    fn branches(&self, query: &BranchQuery, now: i64) -> BankResult<Vec<Branch>> {
        let hour = local_hour(now);
        let view = |(i, b): (usize, &BranchInfo), distance_m: Option<u32>| Branch {
            id: b.id.to_owned(),
            name: b.name.to_owned(),
            address: b.address.to_owned(),
            hours: format!("{:02}:00-{:02}:00", b.open, b.close),
            open_now: (b.open..b.close).contains(&hour),
            queue: if (b.open..b.close).contains(&hour) {
                (u32::from(hour) * 7 + i as u32 * 5) % 13
            } else {
                0
            },
            distance_m,
        };
        let mut out: Vec<Branch> = match query {
            BranchQuery::Text { text } => {
                let in_district: Vec<(usize, &BranchInfo)> = BRANCHES
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| text.contains(b.district))
                    .collect();
                let chosen = if in_district.is_empty() {
                    BRANCHES
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| text.contains(b.city))
                        .collect()
                } else {
                    in_district
                };
                chosen.into_iter().map(|b| view(b, None)).collect()
            }
            BranchQuery::Near {
                latitude,
                longitude,
            } => {
                let mut near: Vec<Branch> = BRANCHES
                    .iter()
                    .enumerate()
                    .map(|b| {
                        let d = distance_m(*latitude, *longitude, b.1.lat, b.1.lon);
                        view(b, Some(d))
                    })
                    .filter(|b| b.distance_m.is_some_and(|d| d <= 50_000))
                    .collect();
                near.sort_by_key(|b| b.distance_m);
                near
            }
        };
        out.truncate(5);
        Ok(out)
    }

    fn take_ticket(&self, customer: &str, branch: &str, now: i64) -> BankResult<QueueTicket> {
        super::demo::customer(customer)?;
        let (i, info) = BRANCHES
            .iter()
            .enumerate()
            .find(|(_, b)| b.id == branch)
            .ok_or_else(|| BankingError::not_found("branch"))?;
        let hour = local_hour(now);
        if !(info.open..info.close).contains(&hour) {
            return Err(BankingError::Rejected {
                reason: format!(
                    "{}现在不在营业时间（{:02}:00-{:02}:00），请营业时间内取号或选择预约",
                    info.name, info.open, info.close
                ),
            });
        }
        let key = format!("ticket/{branch}/{}", ymd(local_date(now)));
        let _money = self.money.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.get::<u32>(&key)?.unwrap_or(0) + 1;
        self.put(&key, &n)?;
        self.tree.flush().map_err(store_err)?;
        Ok(QueueTicket {
            number: format!("A{:03}", 100 + n),
            ahead: (u32::from(hour) * 7 + i as u32 * 5) % 13,
        })
    }

    fn book_appointment(&self, customer: &str, branch: &str, now: i64) -> BankResult<Appointment> {
        super::demo::customer(customer)?;
        let info = BRANCHES
            .iter()
            .find(|b| b.id == branch)
            .ok_or_else(|| BankingError::not_found("branch"))?;
        let day = local_date(now) + Duration::days(1);
        Ok(Appointment {
            reference: format!("Y{}{}", branch, ymd(day).replace('-', "")),
            slot: format!("{} {:02}:30", ymd(day), info.open + 1),
        })
    }
}

/// Great-circle distance in metres (haversine), rounded.
fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> u32 {
    let r = 6_371_000.0_f64;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    let d = 2.0 * r * a.sqrt().min(1.0).asin();
    if d.is_finite() {
        d.round().min(u32::MAX as f64) as u32
    } else {
        u32::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-24 10:00 Beijing time.
    const NOW: i64 = 1_795_485_600;

    fn bank() -> DemoBank {
        let db = sled::Config::new().temporary(true).open().unwrap();
        DemoBank::open(&db).unwrap()
    }

    #[test]
    fn the_same_idempotency_key_moves_money_once() {
        let b = bank();
        let before = b.balance("C001", "A001").unwrap().available;
        let req = TransferRequest {
            customer: "C001".into(),
            from_account: "A001".into(),
            payee: "P001".into(),
            amount: 50_000,
            idempotency_key: "k1".into(),
            now: NOW,
        };
        let first = b.transfer(&req).unwrap();
        let again = b.transfer(&req).unwrap();
        assert_eq!(first, again);
        assert_eq!(
            b.balance("C001", "A001").unwrap().available,
            before - 50_000
        );
        let other = TransferRequest {
            idempotency_key: "k2".into(),
            ..req
        };
        b.transfer(&other).unwrap();
        assert_eq!(
            b.balance("C001", "A001").unwrap().available,
            before - 100_000
        );
        assert_eq!(b.limits("C001", NOW).unwrap().used_today, 100_000);
    }

    #[test]
    fn limits_funds_and_codes() {
        let b = bank();
        let big = TransferRequest {
            customer: "C001".into(),
            from_account: "A001".into(),
            payee: "P001".into(),
            amount: 5_000_001,
            idempotency_key: "k".into(),
            now: NOW,
        };
        assert!(matches!(
            b.transfer(&big),
            Err(BankingError::OverLimit {
                limit: 5_000_000,
                ..
            })
        ));
        let poor = TransferRequest {
            customer: "C002".into(),
            from_account: "A101".into(),
            payee: "P101".into(),
            amount: 200_000,
            idempotency_key: "k2".into(),
            now: NOW,
        };
        assert_eq!(
            b.transfer(&poor),
            Err(BankingError::InsufficientFunds { available: 120_000 })
        );
        let ch = b.start_binding("6222020012342345", NOW).unwrap();
        assert_eq!(ch.card_tail, "2345");
        assert_eq!(
            b.check_code(&ch.challenge, "000000", NOW).unwrap(),
            CodeCheck::Wrong
        );
        assert_eq!(
            b.check_code(&ch.challenge, DEMO_CODE, NOW + CODE_TTL_SECS + 1)
                .unwrap(),
            CodeCheck::Expired
        );
        assert_eq!(
            b.check_code(&ch.challenge, DEMO_CODE, NOW).unwrap(),
            CodeCheck::Valid {
                customer: "C001".into()
            }
        );
        assert_eq!(
            b.check_code(&ch.challenge, DEMO_CODE, NOW).unwrap(),
            CodeCheck::Valid {
                customer: "C001".into()
            },
            "a retried check passes again"
        );
        assert_eq!(
            b.check_code(&ch.challenge, "000000", NOW).unwrap(),
            CodeCheck::Expired,
            "but takes no more guesses"
        );
        assert!(matches!(
            b.start_binding("6222020012340000", NOW),
            Err(BankingError::NotFound { .. })
        ));
    }

    #[test]
    fn branches_by_text_and_by_coordinates() {
        let b = bank();
        let west_lake = b
            .branches(
                &BranchQuery::Text {
                    text: "杭州西湖区".into(),
                },
                NOW,
            )
            .unwrap();
        assert_eq!(west_lake.len(), 1);
        assert_eq!(west_lake[0].id, "B01");
        let hangzhou = b
            .branches(
                &BranchQuery::Text {
                    text: "杭州".into(),
                },
                NOW,
            )
            .unwrap();
        assert_eq!(hangzhou.len(), 3);
        let near = b
            .branches(
                &BranchQuery::Near {
                    latitude: 39.9042,
                    longitude: 116.4074,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(near[0].id, "B04");
        assert!(near[0].distance_m.unwrap() < near[1].distance_m.unwrap());
        assert!(b
            .branches(
                &BranchQuery::Near {
                    latitude: f64::NAN,
                    longitude: 0.0
                },
                NOW
            )
            .unwrap()
            .is_empty());
    }
}
